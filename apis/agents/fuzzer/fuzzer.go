// Package fuzzer fills Checkpoints with random values that survive a round
// trip: defaulted fields are set, as decoding would set them.
package fuzzer

import (
	runtimeserializer "k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/randfill"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

// Funcs are the fuzzer functions of the agents group.
var Funcs = func(codecs runtimeserializer.CodecFactory) []interface{} {
	return []interface{}{
		func(s *agents.CheckpointSpec, c randfill.Continue) {
			c.FillNoCustom(s)
			if s.KeepRunning == nil {
				keep := c.Bool()
				s.KeepRunning = &keep
			}
			if len(s.PersistentContents) == 0 {
				s.PersistentContents = append([]agents.ContentType(nil), agents.AllContents...)
			}
		},
	}
}
