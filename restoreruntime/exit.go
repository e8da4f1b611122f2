package restoreruntime

import (
	"context"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// Containers ended after their checkpoint (keepRunning=false) exit 0: a
// Never or OnFailure Pod then ends Succeeded, as a sandbox taken to its
// checkpoint has, whatever its process does on SIGTERM. runc's service
// reports an exit in four places: its TaskExit event (which containerd's
// CRI and the kubelet go by) and the answers to Wait, State and Delete;
// each is rewritten for the container's init process only.

// cleanExits is the set of containers whose exit is reported as 0,
// shared by the Service and the publisher runc's service sends through.
type cleanExits struct {
	mu  sync.Mutex
	set map[string]bool
}

func (c *cleanExits) mark(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set == nil {
		c.set = map[string]bool{}
	}
	c.set[id] = true
}

func (c *cleanExits) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.set, id)
}

func (c *cleanExits) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set[id]
}

// exitPublisher is runc's publisher with the exits of cleanExits' init
// processes made 0.
type exitPublisher struct {
	shim.Publisher
	clean *cleanExits
}

func (p exitPublisher) Publish(ctx context.Context, topic string, event events.Event) error {
	if e, ok := event.(*eventstypes.TaskExit); ok && e.ID == e.ContainerID && e.ExitStatus != 0 && p.clean.has(e.ContainerID) {
		e = proto.Clone(e).(*eventstypes.TaskExit)
		e.ExitStatus = 0
		event = e
	}
	return p.Publisher.Publish(ctx, topic, event)
}

// Update marks the container for a clean exit when asked to (and passes
// any resources on to runc).
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	if _, ok := r.Annotations[api.AnnotationStopAfterCheckpoint]; ok {
		s.clean.mark(r.ID)
		if r.Resources == nil {
			return &ptypes.Empty{}, nil
		}
		rest := map[string]string{}
		for k, v := range r.Annotations {
			if k != api.AnnotationStopAfterCheckpoint {
				rest[k] = v
			}
		}
		r = proto.Clone(r).(*taskAPI.UpdateTaskRequest)
		r.Annotations = rest
	}
	return s.TTRPCTaskService.Update(ctx, r)
}

// Wait waits as runc does.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	resp, err := s.TTRPCTaskService.Wait(ctx, r)
	if err == nil && r.ExecID == "" && s.clean.has(r.ID) {
		resp.ExitStatus = 0
	}
	return resp, err
}

// State answers as runc does.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	resp, err := s.TTRPCTaskService.State(ctx, r)
	if err == nil && r.ExecID == "" && resp.Status == task.Status_STOPPED && s.clean.has(r.ID) {
		resp.ExitStatus = 0
	}
	return resp, err
}
