package install

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/validation"
)

// FuzzDecodeCheckpoint feeds arbitrary bytes to the JSON and protobuf
// decoders the server uses, converts what decodes to the internal type and
// validates it: errors are fine, panics are not.
func FuzzDecodeCheckpoint(f *testing.F) {
	scheme := runtime.NewScheme()
	Install(scheme)
	codecs := serializer.NewCodecFactory(scheme)
	jsonDecoder := codecs.UniversalDecoder(agents.SchemeGroupVersion)
	pb := protobuf.NewSerializer(scheme, scheme)

	seed := &v1alpha1.Checkpoint{Spec: v1alpha1.CheckpointSpec{PodName: "p", TTLAfterFinished: "1d12h",
		PersistentContents: []v1alpha1.ContentType{"memory"}}}
	seed.Name = "cp"
	seed.SetGroupVersionKind(v1alpha1.SchemeGroupVersion.WithKind("Checkpoint"))
	pbSeed, err := runtime.Encode(pb, seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pbSeed)
	f.Add([]byte(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"x"},"spec":{"podName":"p","ttlAfterFinished":"30d"}}`))
	f.Add([]byte(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","spec":{"persistentContents":["gpu","gpu"],"keepRunning":"yes"}}`))
	f.Add([]byte(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"CheckpointList","items":[{"status":{"phase":"Succeeded"}}]}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, decode := range []func([]byte) (runtime.Object, error){
			func(b []byte) (runtime.Object, error) { return runtime.Decode(jsonDecoder, b) },
			func(b []byte) (runtime.Object, error) {
				obj, _, err := pb.Decode(b, nil, nil)
				if err != nil {
					return nil, err
				}
				internal, err := scheme.ConvertToVersion(obj, agents.SchemeGroupVersion)
				return internal, err
			},
		} {
			obj, err := decode(data)
			if err != nil {
				continue
			}
			if cp, ok := obj.(*agents.Checkpoint); ok {
				_ = validation.ValidateCheckpoint(cp)
				_ = validation.ValidateCheckpointUpdate(cp, cp.DeepCopy())
				_ = validation.ValidateCheckpointStatusUpdate(cp, cp.DeepCopy())
			}
		}
	})
}
