// Package tools pins, in its own module, the generators hack/update-codegen.sh
// runs, so the server's go.mod carries none of them.
package tools
