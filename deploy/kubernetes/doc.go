// Package kubernetes holds weft's Kubernetes manifest (weft.yml) and the
// image it runs (Dockerfile); its tests check that the manifest parses and
// that every weftd/weftctl variable it sets names a real flag.
package kubernetes
