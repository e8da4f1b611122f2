package encryption

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// SecretKeys keeps each checkpoint's record in a Secret of the server's
// own namespace, which no tenant reads: its wrapped data key, and the Pod
// template a clone of it is made from (never the registry's word).
// Deleting it (with its Checkpoint) destroys the key, and the checkpoint's
// blobs, wherever they are kept, are unreadable from then on.
type SecretKeys struct {
	Client    kubernetes.Interface
	Namespace string
}

// Labels and type of a key Secret.
const (
	SecretType            = corev1.SecretType("agents.kruise.io/checkpoint-key")
	LabelKeyOf            = "agents.kruise.io/checkpoint-key-of"
	annotationKeyNS       = "agents.kruise.io/checkpoint-namespace"
	annotationKeyUID      = "agents.kruise.io/checkpoint-uid"
	secretKeyWrapped      = "wrapped"
	secretKeyTemplate     = "template"
	keySecretPrefix       = "checkpoint-key-"
	keySecretLabelPresent = "true"
)

func keySecretName(id string) string { return keySecretPrefix + id }

// Record is what the server keeps of a checkpoint.
type Record struct {
	// Wrapped is its data key, wrapped by the key-encryption key.
	Wrapped string
	// Template is its source's template (a Pod's spec as a clone remakes it).
	Template []byte
}

// Put keeps b's record; a second Put of the same checkpoint fails.
func (s SecretKeys) Put(ctx context.Context, b Binding, rec Record) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: keySecretName(b.CheckpointID), Namespace: s.Namespace,
			Labels:      map[string]string{LabelKeyOf: keySecretLabelPresent},
			Annotations: map[string]string{annotationKeyNS: b.Namespace, annotationKeyUID: b.UID}},
		Type:      SecretType,
		Immutable: new(true),
		Data:      map[string][]byte{secretKeyWrapped: []byte(rec.Wrapped), secretKeyTemplate: rec.Template},
	}
	if _, err := s.Client.CoreV1().Secrets(s.Namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("record the data key of checkpoint %s: %w", b, err)
	}
	return nil
}

// Get reads b's record; ErrNoKey when there is none (it was deleted, or it
// is another Checkpoint's).
func (s SecretKeys) Get(ctx context.Context, b Binding) (Record, error) {
	sec, err := s.Client.CoreV1().Secrets(s.Namespace).Get(ctx, keySecretName(b.CheckpointID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Record{}, fmt.Errorf("%w: checkpoint %s (it was deleted, and its key with it)", ErrNoKey, b)
	}
	if err != nil {
		return Record{}, fmt.Errorf("read the data key of checkpoint %s: %w", b, err)
	}
	if sec.Type != SecretType || sec.Annotations[annotationKeyNS] != b.Namespace || sec.Annotations[annotationKeyUID] != b.UID {
		return Record{}, fmt.Errorf("%w: checkpoint %s (the Secret of its name is not its key)", ErrNoKey, b)
	}
	return Record{Wrapped: string(sec.Data[secretKeyWrapped]), Template: sec.Data[secretKeyTemplate]}, nil
}

// Delete destroys checkpoint id's key; one that is gone is gone.
func (s SecretKeys) Delete(ctx context.Context, id string) error {
	err := s.Client.CoreV1().Secrets(s.Namespace).Delete(ctx, keySecretName(id), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("destroy the data key of checkpoint %s: %w", id, err)
	}
	return nil
}

// List is every key kept, by checkpoint ID, with when it was made.
func (s SecretKeys) List(ctx context.Context) (map[string]time.Time, error) {
	list, err := s.Client.CoreV1().Secrets(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelKeyOf + "=" + keySecretLabelPresent})
	if err != nil {
		return nil, fmt.Errorf("list the checkpoints' data keys: %w", err)
	}
	out := map[string]time.Time{}
	for _, sec := range list.Items {
		if sec.Type == SecretType && len(sec.Name) > len(keySecretPrefix) {
			out[sec.Name[len(keySecretPrefix):]] = sec.CreationTimestamp.Time
		}
	}
	return out, nil
}
