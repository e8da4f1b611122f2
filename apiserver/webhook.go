package apiserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apiserver/registration"
	"github.com/agents-kruise/checkpoint-apiserver/webhook"
)

// WebhookServing is where the server serves its admission webhooks: the
// Checkpoint custom resources' (crd mode) and the review of Pods marked
// for restore (both modes, with a kube-apiserver).
type WebhookServing struct {
	Address           string
	CertFile, KeyFile string
	// Checkpoints reviews Checkpoint custom resources (crd mode; nil: not served).
	Checkpoints *webhook.Checkpoints
	RestorePods *webhook.RestorePods
	// Registration, when set, registers the webhook configurations.
	Registration *registration.WebhookConfig
}

// start serves the webhook over TLS with the serving certificate (read
// again when its file changes) and keeps its configurations registered.
// The kube-apiserver verifies the server by the caBundle; the webhook
// answers only admission reviews, deciding nothing for its caller.
func (w WebhookServing) start(hookCtx genericapiserver.PostStartHookContext) error {
	certs := &reloadingCert{certFile: w.CertFile, keyFile: w.KeyFile}
	if _, err := certs.get(nil); err != nil {
		return fmt.Errorf("webhook serving certificate: %w", err)
	}
	ln, err := net.Listen("tcp", w.Address)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	// The kube-apiserver gives a review at most 30 s.
	srv := &http.Server{Handler: webhook.Handler(w.Checkpoints, w.RestorePods), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
			klog.ErrorS(err, "Admission webhook stopped")
		}
	}()
	go func() {
		<-hookCtx.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if w.Registration != nil {
		go registration.RunWebhooks(hookCtx, *w.Registration)
	}
	klog.InfoS("Admission webhooks serving", "address", ln.Addr().String(), "checkpoints", w.Checkpoints != nil, "restorePods", w.RestorePods != nil)
	return nil
}

// reloadingCert reads a key pair again when its certificate file changes.
type reloadingCert struct {
	certFile, keyFile string
	mu                sync.Mutex
	mtime             time.Time
	cert              *tls.Certificate
}

func (r *reloadingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := os.Stat(r.certFile)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil
		}
		return nil, err
	}
	if r.cert == nil || !st.ModTime().Equal(r.mtime) {
		c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
		if err != nil {
			if r.cert != nil {
				return r.cert, nil // keep serving with the last good pair
			}
			return nil, err
		}
		r.cert, r.mtime = &c, st.ModTime()
	}
	return r.cert, nil
}
