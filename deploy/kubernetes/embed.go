package kubernetes

import _ "embed"

//go:embed weft-kube.yml
var kubeManifest []byte

// KubeManifest is weft-kube.yml, the manifest of Kubernetes mode: the lab
// creates its ServiceAccount and RBAC from it, so the lab's weftd runs with
// exactly the rights a cluster gives it.
func KubeManifest() []byte { return kubeManifest }
