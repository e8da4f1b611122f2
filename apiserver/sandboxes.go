package apiserver

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/e2b"
)

// driverSandboxes are the E2B front's sandboxes when no kube-apiserver
// runs them (standalone mode): containers the driver finds by their CRI
// labels and stops itself. Namespaces are the only boundary between teams.
type driverSandboxes struct {
	resolver driver.Resolver
	driver   driver.Driver
}

var _ e2b.Sandboxes = driverSandboxes{}

func (d driverSandboxes) resolve(ctx context.Context, namespace, name string) (driver.Target, error) {
	t, err := d.resolver.Resolve(ctx, namespace, name)
	switch {
	case errors.Is(err, driver.ErrTargetNotFound):
		return t, fmt.Errorf("%w: %v", e2b.ErrSandboxNotFound, err)
	case errors.Is(err, driver.ErrUnavailable):
		return t, apierrors.NewServiceUnavailable(err.Error())
	}
	return t, err
}

func (d driverSandboxes) Get(ctx context.Context, _ user.Info, _ bool, namespace, name string) (e2b.Sandbox, error) {
	t, err := d.resolve(ctx, namespace, name)
	if err != nil {
		return e2b.Sandbox{}, err
	}
	return e2b.Sandbox{Namespace: t.Namespace, Name: t.Name, Running: true}, nil
}

// List: the standalone front lists no sandboxes.
func (d driverSandboxes) List(context.Context, user.Info, bool, string) ([]e2b.Sandbox, error) {
	return nil, apierrors.NewMethodNotSupported(e2b.SandboxesResource, "list")
}

// Pods: standalone sandboxes are bare containers.
func (d driverSandboxes) Pods() bool { return false }

func (d driverSandboxes) Delete(ctx context.Context, _ user.Info, _ bool, namespace, name string) error {
	t, err := d.resolve(ctx, namespace, name)
	if err != nil {
		return err
	}
	return d.driver.Stop(ctx, t)
}
