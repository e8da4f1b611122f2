package apiserver

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	checkpointstorage "github.com/agents-kruise/checkpoint-apiserver/registry/checkpoint"
)

// ExtraConfig is what this server adds to the generic configuration.
type ExtraConfig struct {
	// AdminGroups may act on every Checkpoint and set its owner explicitly.
	AdminGroups []string
}

// Config is the whole configuration of the server.
type Config struct {
	GenericConfig *genericapiserver.RecommendedConfig
	ExtraConfig   ExtraConfig
}

type completedConfig struct {
	GenericConfig genericapiserver.CompletedConfig
	ExtraConfig   *ExtraConfig
}

// CompletedConfig is a Config with every default filled in; only it can build a server.
type CompletedConfig struct {
	*completedConfig
}

// Complete fills in the defaults that depend on other settings.
func (cfg *Config) Complete() CompletedConfig {
	return CompletedConfig{&completedConfig{
		GenericConfig: cfg.GenericConfig.Complete(),
		ExtraConfig:   &cfg.ExtraConfig,
	}}
}

// Server is the running checkpoint API server.
type Server struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// New builds the server and installs the agents.kruise.io API group.
func (c CompletedConfig) New() (*Server, error) {
	generic, err := c.GenericConfig.New("checkpoint-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("create generic server: %w", err)
	}
	s := &Server{GenericAPIServer: generic}

	store, err := checkpointstorage.NewStorage(Scheme, c.GenericConfig.RESTOptionsGetter, c.ExtraConfig.AdminGroups)
	if err != nil {
		return nil, err
	}
	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(agents.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	apiGroupInfo.VersionedResourcesStorageMap[v1alpha1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"checkpoints":        store.Checkpoint,
		"checkpoints/status": store.Status,
	}
	if err := s.GenericAPIServer.InstallAPIGroup(&apiGroupInfo); err != nil {
		return nil, fmt.Errorf("install %s: %w", agents.GroupName, err)
	}
	return s, nil
}
