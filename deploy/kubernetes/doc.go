// Package kubernetes holds weft's Kubernetes manifests — weft.yml (etcd as
// the store) and weft-kube.yml (the Kubernetes API as the store, weftd
// --kube-subnet-mgr) — and the image they run (Dockerfile). Its tests check
// that the manifests parse, that every weftd/weftctl flag and variable they
// use is real, and, against a real kube-apiserver, that weft-kube.yml's
// objects are valid and its ClusterRole is exactly what weftd needs.
package kubernetes
