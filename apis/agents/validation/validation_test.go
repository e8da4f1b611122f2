package validation

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func valid() *agents.Checkpoint {
	keep := true
	return &agents.Checkpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "checkpoint-code-demo-01", Namespace: "default", ResourceVersion: "1"},
		Spec: agents.CheckpointSpec{
			PodName:            "code-interpreter-28rvn",
			KeepRunning:        &keep,
			PersistentContents: []agents.ContentType{agents.ContentMemory, agents.ContentFilesystem},
			TTLAfterFinished:   "30h",
		},
		Status: agents.CheckpointStatus{Phase: agents.PhasePending},
	}
}

// wantErrs checks that errs holds exactly one error per expected "type path" pair.
func wantErrs(t *testing.T, errs field.ErrorList, want ...string) {
	t.Helper()
	var got []string
	for _, e := range errs {
		got = append(got, string(e.Type)+" "+e.Field)
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("errors = %q, want %q (%v)", got, want, errs)
	}
}

func TestValidateCheckpoint(t *testing.T) {
	cases := map[string]struct {
		mutate func(*agents.Checkpoint)
		want   []string
	}{
		"valid":                  {func(*agents.Checkpoint) {}, nil},
		"sandbox only":           {func(c *agents.Checkpoint) { c.Spec.PodName, c.Spec.SandboxName = "", "sb-1" }, nil},
		"no target":              {func(c *agents.Checkpoint) { c.Spec.PodName = "" }, []string{"FieldValueRequired spec.podName"}},
		"bad pod name":           {func(c *agents.Checkpoint) { c.Spec.PodName = "Bad_Name" }, []string{"FieldValueInvalid spec.podName"}},
		"bad sandbox name":       {func(c *agents.Checkpoint) { c.Spec.SandboxName = "-x" }, []string{"FieldValueInvalid spec.sandboxName"}},
		"unknown content":        {func(c *agents.Checkpoint) { c.Spec.PersistentContents = []agents.ContentType{"memory", "gpu"} }, []string{"FieldValueNotSupported spec.persistentContents[1]"}},
		"duplicate content":      {func(c *agents.Checkpoint) { c.Spec.PersistentContents = []agents.ContentType{"memory", "memory"} }, []string{"FieldValueDuplicate spec.persistentContents[1]"}},
		"ttl days":               {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "30d" }, nil},
		"ttl days and hours":     {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "1d12h" }, nil},
		"ttl bad unit":           {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "30x" }, []string{"FieldValueInvalid spec.ttlAfterFinished"}},
		"ttl negative":           {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "-5m" }, []string{"FieldValueInvalid spec.ttlAfterFinished"}},
		"ttl zero":               {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "0s" }, []string{"FieldValueInvalid spec.ttlAfterFinished"}},
		"ttl bare d":             {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "d" }, []string{"FieldValueInvalid spec.ttlAfterFinished"}},
		"bad object name":        {func(c *agents.Checkpoint) { c.Name = "UPPER" }, []string{"FieldValueInvalid metadata.name"}},
		"several errors at once": {func(c *agents.Checkpoint) { c.Spec.PodName, c.Spec.TTLAfterFinished = "", "x" }, []string{"FieldValueRequired spec.podName", "FieldValueInvalid spec.ttlAfterFinished"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cp := valid()
			tc.mutate(cp)
			wantErrs(t, ValidateCheckpoint(cp), tc.want...)
		})
	}
}

func TestValidateCheckpointUpdateSpecImmutable(t *testing.T) {
	cases := map[string]struct {
		mutate func(*agents.Checkpoint)
		want   []string
	}{
		"labels may change": {func(c *agents.Checkpoint) { c.Labels = map[string]string{"a": "b"} }, nil},
		"podName":           {func(c *agents.Checkpoint) { c.Spec.PodName = "other" }, []string{"FieldValueInvalid spec.podName"}},
		"sandboxName":       {func(c *agents.Checkpoint) { c.Spec.SandboxName = "sb" }, []string{"FieldValueInvalid spec.sandboxName"}},
		"keepRunning": {func(c *agents.Checkpoint) {
			f := false
			c.Spec.KeepRunning = &f
		}, []string{"FieldValueInvalid spec.keepRunning"}},
		"persistentContents": {func(c *agents.Checkpoint) { c.Spec.PersistentContents = []agents.ContentType{"memory"} }, []string{"FieldValueInvalid spec.persistentContents"}},
		"ttlAfterFinished":   {func(c *agents.Checkpoint) { c.Spec.TTLAfterFinished = "1h" }, []string{"FieldValueInvalid spec.ttlAfterFinished"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			old, cp := valid(), valid()
			tc.mutate(cp)
			wantErrs(t, ValidateCheckpointUpdate(cp, old), tc.want...)
		})
	}
}

func TestValidateCheckpointStatusUpdate(t *testing.T) {
	now := metav1.NewTime(time.Now())
	ready := func(phase agents.CheckpointPhase, id string) agents.CheckpointStatus {
		return agents.CheckpointStatus{Phase: phase, CheckpointID: id}
	}
	cases := map[string]struct {
		from, to agents.CheckpointStatus
		want     []string
	}{
		"pending to creating":      {ready("Pending", ""), ready("Creating", ""), nil},
		"creating to succeeded":    {ready("Creating", ""), ready("Succeeded", "ckpt-1"), nil},
		"creating to failed":       {ready("Creating", ""), ready("Failed", ""), nil},
		"succeeded to terminating": {ready("Succeeded", "ckpt-1"), ready("Terminating", "ckpt-1"), nil},
		"pending to terminating":   {ready("Pending", ""), ready("Terminating", ""), nil},
		"same phase":               {ready("Creating", ""), ready("Creating", ""), nil},
		"creating back to pending": {ready("Creating", ""), ready("Pending", ""), []string{"FieldValueForbidden status.phase"}},
		"succeeded to failed":      {ready("Succeeded", "ckpt-1"), ready("Failed", "ckpt-1"), []string{"FieldValueForbidden status.phase"}},
		"failed to succeeded":      {ready("Failed", ""), ready("Succeeded", "ckpt-1"), []string{"FieldValueForbidden status.phase"}},
		"terminating to succeeded": {ready("Terminating", ""), ready("Succeeded", "ckpt-1"), []string{"FieldValueForbidden status.phase"}},
		"unknown phase":            {ready("Pending", ""), ready("Done", ""), []string{"FieldValueNotSupported status.phase"}},
		"empty phase":              {ready("Pending", ""), ready("", ""), []string{"FieldValueRequired status.phase"}},
		"succeeded without id":     {ready("Creating", ""), ready("Succeeded", ""), []string{"FieldValueRequired status.checkpointId"}},
		"id changes":               {ready("Succeeded", "ckpt-1"), ready("Succeeded", "ckpt-2"), []string{"FieldValueInvalid status.checkpointId"}},
		"id not a label value":     {ready("Creating", ""), ready("Succeeded", "a b"), []string{"FieldValueInvalid status.checkpointId"}},
		"negative size":            {ready("Creating", ""), agents.CheckpointStatus{Phase: "Failed", SizeBytes: -1}, []string{"FieldValueInvalid status.sizeBytes"}},
		"pause within the capture": {ready("Creating", ""), agents.CheckpointStatus{Phase: "Succeeded", CheckpointID: "ckpt-1",
			PauseDuration: &metav1.Duration{Duration: time.Second}, CaptureDuration: &metav1.Duration{Duration: 2 * time.Second}}, nil},
		"pause longer than the capture": {ready("Creating", ""), agents.CheckpointStatus{Phase: "Succeeded", CheckpointID: "ckpt-1",
			PauseDuration: &metav1.Duration{Duration: 3 * time.Second}, CaptureDuration: &metav1.Duration{Duration: 2 * time.Second}}, []string{"FieldValueInvalid status.pauseDuration"}},
		"negative pause": {ready("Creating", ""), agents.CheckpointStatus{Phase: "Failed", PauseDuration: &metav1.Duration{Duration: -1}},
			[]string{"FieldValueInvalid status.pauseDuration"}},
		"bad contents": {ready("Creating", ""), agents.CheckpointStatus{Phase: "Failed", Contents: []agents.ContentType{"disk"}}, []string{"FieldValueNotSupported status.contents[0]"}},
		"bad condition": {ready("Creating", ""), agents.CheckpointStatus{Phase: "Failed", Conditions: []metav1.Condition{{
			Type: "Ready", Status: "Maybe", Reason: "CaptureFailed", LastTransitionTime: now}}}, []string{"FieldValueNotSupported status.conditions[0].status"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			old, cp := valid(), valid()
			old.Status, cp.Status = tc.from, tc.to
			wantErrs(t, ValidateCheckpointStatusUpdate(cp, old), tc.want...)
		})
	}
}
