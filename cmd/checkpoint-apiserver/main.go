// Command checkpoint-apiserver serves checkpoints.agents.kruise.io/v1alpha1.
package main

import (
	goflag "flag"
	"os"

	"github.com/spf13/pflag"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	// workqueue_depth{name="checkpoint-lifecycle"} and the other queue metrics on /metrics.
	_ "k8s.io/component-base/metrics/prometheus/workqueue"

	"github.com/agents-kruise/checkpoint-apiserver/apiserver"
)

func main() {
	opts := apiserver.NewOptions(os.Stdout)
	fs := pflag.NewFlagSet("checkpoint-apiserver", pflag.ExitOnError)
	opts.AddFlags(fs)
	klogFlags := goflag.NewFlagSet("klog", goflag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	_ = fs.Parse(os.Args[1:])

	ctx := genericapiserver.SetupSignalContext()
	if err := opts.Run(ctx); err != nil {
		klog.ErrorS(err, "checkpoint-apiserver failed")
		klog.Flush()
		os.Exit(1)
	}
}
