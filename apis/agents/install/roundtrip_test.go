package install

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/apitesting/roundtrip"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/fuzzer"
)

// TestRoundTripTypes fuzzes Checkpoint and CheckpointList through
// internal -> v1alpha1 -> internal, in JSON, YAML, CBOR and protobuf.
func TestRoundTripTypes(t *testing.T) {
	roundtrip.RoundTripTestForAPIGroup(t, Install, fuzzer.Funcs)
	roundtrip.RoundTripProtobufTestForAPIGroup(t, Install, fuzzer.Funcs)
}
