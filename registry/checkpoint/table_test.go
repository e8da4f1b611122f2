package checkpoint

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func TestConvertToTable(t *testing.T) {
	created := metav1.NewTime(time.Now().Add(-2 * time.Hour))
	done := metav1.NewTime(time.Now().Add(-90 * time.Minute))
	list := &agents.CheckpointList{
		ListMeta: metav1.ListMeta{ResourceVersion: "42"},
		Items: []agents.Checkpoint{
			{
				ObjectMeta: metav1.ObjectMeta{Name: "a", CreationTimestamp: created},
				Spec:       agents.CheckpointSpec{PodName: "pod-a", TTLAfterFinished: "30h", PersistentContents: agents.AllContents},
				Status: agents.CheckpointStatus{Phase: agents.PhaseSucceeded, CheckpointID: "ck-a", CompletionTime: &done, Contents: []agents.ContentType{agents.ContentMemory},
					PauseDuration: &metav1.Duration{Duration: 312345 * time.Microsecond}, CaptureDuration: &metav1.Duration{Duration: 2 * time.Second}},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: created},
				Spec:       agents.CheckpointSpec{SandboxName: "sb-b"},
			},
		},
	}
	table, err := TableConvertor{}.ConvertToTable(context.Background(), list, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range table.ColumnDefinitions {
		names = append(names, c.Name)
	}
	if got, want := len(names), 10; got != want {
		t.Fatalf("columns = %v", names)
	}
	if table.ResourceVersion != "42" || len(table.Rows) != 2 {
		t.Fatalf("table = rv %q, %d rows", table.ResourceVersion, len(table.Rows))
	}
	wantA := []interface{}{"a", "Succeeded", "120m", "pod-a", "memory", "ck-a", "90m", "312ms", "2s", "30h"}
	wantB := []interface{}{"b", "<none>", "120m", "sb-b", "<none>", "<none>", "<none>", "<none>", "<none>", "<none>"}
	for i, want := range [][]interface{}{wantA, wantB} {
		for j := range want {
			if table.Rows[i].Cells[j] != want[j] {
				t.Errorf("row %d cell %s = %v, want %v", i, names[j], table.Rows[i].Cells[j], want[j])
			}
		}
	}

	headless, err := TableConvertor{}.ConvertToTable(context.Background(), &list.Items[0], &metav1.TableOptions{NoHeaders: true})
	if err != nil || len(headless.ColumnDefinitions) != 0 || len(headless.Rows) != 1 {
		t.Errorf("single object without headers = %+v, %v", headless, err)
	}
	if _, err := (TableConvertor{}).ConvertToTable(context.Background(), &metav1.Status{}, nil); err == nil {
		t.Error("a Status printed as checkpoints")
	}
}
