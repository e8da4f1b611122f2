package framework

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// E2BTeam gives the E2B front's team of namespace ns (the group
// agents.kruise.io:e2b-team:<ns>) what pause, resume and kill need there
// in aggregated mode: Checkpoints and snapshots, capture and restore, and
// Pods (list included, as the SDK lists sandboxes; exec, which a capture needs).
func (c *Cluster) E2BTeam(ns string) {
	c.t.Helper()
	c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"e2b-team","namespace":%q},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints","snapshots"],"verbs":["get","list","create","delete"]},
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints/capture","checkpoints/restore"],"verbs":["create"]},
{"apiGroups":[""],"resources":["pods"],"verbs":["get","list","create","delete"]},
{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]}`, ns))
	c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"e2b-team","namespace":%q},
"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"e2b-team"},
"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"agents.kruise.io:e2b-team:%s"}]}`, ns, ns))
}

// E2BCall is one call of the E2B REST front at url with API key, as the
// SDKs make it (an empty JSON body): its status and body, or the error of
// a call cut short.
func E2BCall(url, key, method, path string) (int, string, error) {
	req, err := http.NewRequest(method, url+path, strings.NewReader("{}"))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
