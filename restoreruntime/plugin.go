package restoreruntime

import (
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
)

// Register registers the shim's task service: runc's, wrapped by Service.
// The configuration is read when the shim starts; without one, the shim
// fails rather than run a marked container fresh.
func Register() {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			cfg, err := LoadConfig()
			if err != nil {
				return nil, err
			}
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			clean := &cleanExits{}
			runc, err := task.NewTaskService(ic.Context, exitPublisher{Publisher: pp.(shim.Publisher), clean: clean}, ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			var src Source = DirSource{Dir: cfg.ImagesDir}
			if cfg.AgentSocket != "" {
				src = SocketSource{Socket: cfg.AgentSocket}
			}
			return NewService(runc, cfg, src, clean), nil
		},
	})
}
