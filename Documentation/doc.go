// Package docs holds weft's documentation as Markdown; its tests
// keep the metrics page and the Grafana dashboard in step with the metrics
// weftd defines, and the links between pages working.
package docs
