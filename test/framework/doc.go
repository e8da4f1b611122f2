// Package framework holds the fixtures the tests under test/ share: finding
// real components (or failing under REQUIRE_REAL=1), and starting a real
// checkpoint-apiserver process against a real etcd.
package framework
