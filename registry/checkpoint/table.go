package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

// TableConvertor prints Checkpoints for kubectl get: NAME, STATUS, AGE, and
// with -o wide POD, CONTENTS, CHECKPOINT-ID, COMPLETED, PAUSE, DURATION, TTL.
type TableConvertor struct{}

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the Checkpoint."},
	{Name: "Status", Type: "string", Description: "The phase of the capture."},
	{Name: "Age", Type: "string", Description: "Time since the Checkpoint was created."},
	{Name: "Pod", Type: "string", Priority: 1, Description: "The Pod (or sandbox) captured."},
	{Name: "Contents", Type: "string", Priority: 1, Description: "What is (to be) captured: memory, filesystem."},
	{Name: "Checkpoint-ID", Type: "string", Priority: 1, Description: "The driver's identifier of the captured state."},
	{Name: "Completed", Type: "string", Priority: 1, Description: "Time since the capture finished."},
	{Name: "Pause", Type: "string", Priority: 1, Description: "How long the sandbox's processes were frozen (status.pauseDuration)."},
	{Name: "Duration", Type: "string", Priority: 1, Description: "How long the capture took, until its checkpoint was durable (status.captureDuration)."},
	{Name: "TTL", Type: "string", Priority: 1, Description: "How long after completion the Checkpoint is deleted."},
}

// ConvertToTable turns a Checkpoint or a CheckpointList into table rows.
func (TableConvertor) ConvertToTable(_ context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{}
	if opts, ok := tableOptions.(*metav1.TableOptions); !ok || !opts.NoHeaders {
		table.ColumnDefinitions = columns
	}
	if m, err := meta.ListAccessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
		table.Continue = m.GetContinue()
		table.RemainingItemCount = m.GetRemainingItemCount()
	} else if m, err := meta.CommonAccessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}

	now := time.Now()
	switch t := obj.(type) {
	case *agents.Checkpoint:
		table.Rows = []metav1.TableRow{row(t, now)}
	case *agents.CheckpointList:
		table.Rows = make([]metav1.TableRow, 0, len(t.Items))
		for i := range t.Items {
			table.Rows = append(table.Rows, row(&t.Items[i], now))
		}
	default:
		return nil, fmt.Errorf("cannot print %T as a table of checkpoints", obj)
	}
	return table, nil
}

func row(cp *agents.Checkpoint, now time.Time) metav1.TableRow {
	pod := cp.Spec.PodName
	if pod == "" {
		pod = cp.Spec.SandboxName
	}
	contents := cp.Status.Contents
	if len(contents) == 0 {
		contents = cp.Spec.PersistentContents
	}
	completed := "<none>"
	if cp.Status.CompletionTime != nil {
		completed = since(cp.Status.CompletionTime.Time, now)
	}
	return metav1.TableRow{
		Object: runtime.RawExtension{Object: cp},
		Cells: []interface{}{
			cp.Name,
			orNone(string(cp.Status.Phase)),
			since(cp.CreationTimestamp.Time, now),
			orNone(pod),
			orNone(joinContents(contents)),
			orNone(cp.Status.CheckpointID),
			completed,
			shortDuration(cp.Status.PauseDuration),
			shortDuration(cp.Status.CaptureDuration),
			orNone(cp.Spec.TTLAfterFinished),
		},
	}
}

// shortDuration prints d to the millisecond ("<none>" when unset).
func shortDuration(d *metav1.Duration) string {
	if d == nil {
		return "<none>"
	}
	return d.Duration.Round(time.Millisecond).String()
}

func since(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func joinContents(cs []agents.ContentType) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = string(c)
	}
	return strings.Join(parts, ",")
}
