package config

// Types a config file may carry in typed_config (google.protobuf.Any)
// besides the ones Translate applies (tcp_proxy, http_connection_manager and
// the router, registered in parse.go): common HTTP and listener filters and
// access loggers. Registered so that a file using them parses; Translate
// notes each as not applied in compat mode (an HTTP filter needs the
// request, a listener filter or access log is not run), so nothing is
// dropped silently. A type not registered here still rejects the file with
// its @type named (protojson cannot decode an Any of an unknown type). Over
// xDS, typed_config arrives as bytes and needs no registration.
//
// Registering costs ~1 MB of binary and no heap until a file uses one
// (descriptors are built lazily).
import (
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
)
