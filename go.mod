module github.com/weftnet/weft

go 1.26.0

require github.com/containernetworking/plugins v1.9.1

require (
	github.com/containernetworking/cni v1.3.1 // indirect
	github.com/go-logr/logr v1.4.4 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/tools v0.51.0 // indirect
)
