// Package apiserver assembles the checkpoint API server: its scheme and
// codecs, its configuration (Config -> Complete -> New), the options that
// fill the configuration from flags, and the standalone mode.
package apiserver
