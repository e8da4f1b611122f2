//go:build tools

// Package etcd pins the etcd server at v3.7.3.
package etcd

import _ "go.etcd.io/etcd/server/v3"
