package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Translate turns Envoy listeners and clusters into a Model. It is the one
// translation path for every source (local file, xDS). It either returns a
// valid model or an error wrapping ErrInvalid (a *ValidationError listing
// every problem found); the caller keeps its previous model on error.
//
// The inputs are not modified and may be shared.
func Translate(listeners []*listenerv3.Listener, clusters []*clusterv3.Cluster) (*Model, error) {
	t := translator{
		rules:       fieldRuleSet(),
		clusters:    make(map[string]Cluster, len(clusters)),
		clusterSeen: make(map[string]string, len(clusters)),
		origDst:     make(map[string]struct{}),
		services:    make(map[ServiceKey]Service, len(listeners)),
		claims:      make([]claim, 0, len(listeners)),
		firstClaim:  make(map[ServiceKey]int, len(listeners)),
		listenerIdx: make(map[string]string, len(listeners)),
	}
	for i, c := range clusters {
		t.cluster(i, c)
	}
	for i, l := range listeners {
		t.listener(i, l)
	}
	t.resolveClaims()
	if len(t.issues) > 0 {
		return nil, &ValidationError{Issues: t.issues}
	}
	t.finishFieldNotes()
	m := &Model{Services: t.services, Clusters: t.clusters, Unsupported: t.notes}
	sortNotes(m.Unsupported)
	m.Unsupported = slices.Compact(m.Unsupported)
	m.Version = m.computeVersion()
	return m, nil
}

type translator struct {
	rules     *ruleSet
	issues    []Issue
	issueSeen map[Issue]bool
	notes     []Note
	clusters  map[string]Cluster
	// origDst holds the valid ORIGINAL_DST clusters: no endpoints, a
	// service sent to them keeps its original destination.
	origDst map[string]struct{}
	// clusterSeen maps every cluster name met (valid or not) to its object
	// description, to report duplicates and to not report references to an
	// invalid cluster as unknown.
	clusterSeen map[string]string
	services    map[ServiceKey]Service
	// claims are the bids for service keys, in input order; firstClaim
	// indexes the first one of each key (the others follow claim.next).
	claims      []claim
	firstClaim  map[ServiceKey]int
	listenerIdx map[string]string // listener name -> object description
	// path and fieldNotes are the state of the allow-list walk (fields.go).
	path       []pathStep
	fieldNotes map[string]*fieldNote
}

// issue records a problem once: one virtual host serving several keys of a
// listener is checked once per key.
func (t *translator) issue(obj, format string, args ...any) {
	is := Issue{Object: obj, Msg: fmt.Sprintf(format, args...)}
	if t.issueSeen[is] {
		return
	}
	if t.issueSeen == nil {
		t.issueSeen = make(map[Issue]bool)
	}
	t.issueSeen[is] = true
	t.issues = append(t.issues, is)
}

func (t *translator) note(kind NoteKind, obj, format string, args ...any) {
	t.notes = append(t.notes, Note{Kind: kind, Object: obj, Reason: fmt.Sprintf(format, args...)})
}

// envoyValidation records the protoc-gen-validate errors of one object, one
// issue per violated rule, each with its field path in Envoy's snake_case.
func (t *translator) envoyValidation(obj string, err error) {
	var msgs []string
	flattenPGV("", err, &msgs, 0)
	for _, m := range msgs {
		t.issue(obj, "envoy schema: %s", m)
	}
}

type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

func flattenPGV(prefix string, err error, out *[]string, depth int) {
	if multi, ok := err.(interface{ AllErrors() []error }); ok && depth < 64 {
		for _, e := range multi.AllErrors() {
			flattenPGV(prefix, e, out, depth+1)
		}
		return
	}
	v, ok := err.(pgvError)
	if !ok {
		if prefix != "" {
			*out = append(*out, prefix+": "+err.Error())
		} else {
			*out = append(*out, err.Error())
		}
		return
	}
	path := snakeField(v.Field())
	if prefix != "" {
		path = prefix + "." + path
	}
	c := v.Cause()
	if c != nil && depth < 64 {
		_, nested := c.(pgvError)
		_, multi := c.(interface{ AllErrors() []error })
		if nested || multi {
			flattenPGV(path, c, out, depth+1)
			return
		}
	}
	msg := path + ": " + v.Reason()
	if c != nil {
		msg += ": " + c.Error()
	}
	*out = append(*out, msg)
}

// snakeField turns a generated Go field name ("LbEndpoints[0]") into the
// proto field name ("lb_endpoints[0]"); bracketed keys are kept as they are.
func snakeField(f string) string {
	var b strings.Builder
	inKey := false
	for i, r := range f {
		switch {
		case r == '[':
			inKey = true
		case r == ']':
			inKey = false
		case !inKey && r >= 'A' && r <= 'Z':
			if i > 0 {
				if p := f[i-1]; (p >= 'a' && p <= 'z') || (p >= '0' && p <= '9') {
					b.WriteByte('_')
				}
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func named(kind string, i int, name string) string {
	if name == "" {
		return kind + "[" + strconv.Itoa(i) + "]"
	}
	return kind + " " + strconv.Quote(name)
}

// ---- clusters ----

func (t *translator) cluster(i int, c *clusterv3.Cluster) {
	if c == nil {
		t.issue(named("cluster", i, ""), "is nil")
		return
	}
	obj := named("cluster", i, c.GetName())
	if err := c.ValidateAll(); err != nil {
		t.envoyValidation(obj, err)
		if c.GetName() != "" {
			t.clusterSeen[c.GetName()] = obj
		}
		return
	}
	name := c.GetName()
	if prev, dup := t.clusterSeen[name]; dup {
		t.issue(obj, "duplicate cluster name (first defined as %s)", prev)
		return
	}
	t.clusterSeen[name] = obj
	ok := true
	origDst := false

	switch ct := c.GetClusterDiscoveryType().(type) {
	case nil:
	case *clusterv3.Cluster_Type:
		switch ct.Type {
		case clusterv3.Cluster_STATIC:
		case clusterv3.Cluster_EDS:
			t.issue(obj, "type EDS is not supported by the local-file translator (endpoints come only from an xDS server); use type STATIC with load_assignment")
			ok = false
		case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			t.issue(obj, "type %s is not supported (compat mode rewrites connect() to IP endpoints and resolves no names); use type STATIC with IP endpoints", ct.Type)
			ok = false
		case clusterv3.Cluster_ORIGINAL_DST:
			origDst = true
		default:
			t.issue(obj, "type %s is not supported; use type STATIC", ct.Type)
			ok = false
		}
	case *clusterv3.Cluster_ClusterType:
		t.issue(obj, "cluster_type %q is not supported; use type STATIC", ct.ClusterType.GetName())
		ok = false
	}

	var policy LBPolicy
	switch {
	case c.GetLoadBalancingPolicy() != nil || c.GetLbPolicy() == clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG:
		t.issue(obj, "load_balancing_policy is not supported; use lb_policy ROUND_ROBIN or RANDOM")
		ok = false
	case origDst:
		// Envoy takes CLUSTER_PROVIDED and, for compatibility, the
		// default (ROUND_ROBIN, which cannot be told from unset).
		if p := c.GetLbPolicy(); p != clusterv3.Cluster_CLUSTER_PROVIDED && p != clusterv3.Cluster_ROUND_ROBIN {
			t.issue(obj, "type ORIGINAL_DST takes lb_policy CLUSTER_PROVIDED, not %s", p)
			ok = false
		}
	case c.GetLbPolicy() == clusterv3.Cluster_ROUND_ROBIN:
		policy = RoundRobin
	case c.GetLbPolicy() == clusterv3.Cluster_RANDOM:
		policy = Random
	default:
		t.issue(obj, "lb_policy %s is not supported; use ROUND_ROBIN or RANDOM", c.GetLbPolicy())
		ok = false
	}

	t.unapplied(obj, c, t.rules.cluster)

	if origDst {
		if t.originalDst(obj, c) && ok {
			t.origDst[name] = struct{}{}
		}
		return
	}
	eps, epOK := t.endpoints(obj, c.GetLoadAssignment())
	if !ok || !epOK {
		return
	}
	t.clusters[name] = Cluster{Name: name, Policy: policy, Endpoints: eps}
}

// originalDst checks the parts of an ORIGINAL_DST cluster that decide where
// its connections go. Such a cluster sends each connection to the address
// the application connected to, which is what compat mode does by not
// rewriting it: a service served by it alone is passthrough.
func (t *translator) originalDst(obj string, c *clusterv3.Cluster) bool {
	ok := true
	if c.GetLoadAssignment() != nil {
		t.issue(obj, "an ORIGINAL_DST cluster has no load_assignment (Envoy rejects it too): its connections keep their original destination; remove load_assignment or use type STATIC")
		ok = false
	}
	if cfg := c.GetOriginalDstLbConfig(); cfg != nil && populated(cfg.ProtoReflect()) {
		t.issue(obj, "original_dst_lb_config is not supported (a destination from an HTTP header, metadata or a port override): compat mode leaves each connection at the address the application connected to; remove original_dst_lb_config")
		ok = false
	}
	return ok
}

func (t *translator) endpoints(obj string, la *endpointv3.ClusterLoadAssignment) ([]Endpoint, bool) {
	ok := true
	n := 0
	for _, lle := range la.GetEndpoints() {
		n += len(lle.GetLbEndpoints())
	}
	eps := make([]Endpoint, 0, n)
	for j, lle := range la.GetEndpoints() {
		if lle.GetLedsClusterLocalityConfig() != nil {
			t.issue(localityObj(obj, j), "leds_cluster_locality_config (LEDS) is not supported; list lb_endpoints inline")
			ok = false
			continue
		}
		if p := lle.GetPriority(); p != 0 {
			t.note(Ignored, localityObj(obj, j), "priority %d endpoints are failover only; compat mode has no health checking and uses priority 0 only", p)
			continue
		}
		for k, lbe := range lle.GetLbEndpoints() {
			ap, w, use, valid := t.endpoint(obj, j, k, lbe)
			ok = ok && valid
			if use {
				eps = append(eps, Endpoint{Addr: ap, Weight: w})
			}
		}
	}
	// Canonical order; repeated addresses merge into one endpoint.
	slices.SortFunc(eps, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
	var total uint64
	out := eps[:0]
	for i := 0; i < len(eps); {
		e := eps[i]
		w := uint64(e.Weight)
		for i++; i < len(eps) && eps[i].Addr == e.Addr; i++ {
			w += uint64(eps[i].Weight)
		}
		total += w
		if w > math.MaxUint32 {
			t.issue(obj, "endpoint %s is listed more than once and its weights sum to %d, more than %d", e.Addr, w, uint32(math.MaxUint32))
			ok = false
			continue
		}
		out = append(out, Endpoint{Addr: e.Addr, Weight: uint32(w)})
	}
	if total > math.MaxUint32 {
		t.issue(obj, "endpoint weights sum to %d, more than %d; lower the load_balancing_weight values", total, uint32(math.MaxUint32))
		ok = false
	}
	return out, ok
}

func localityObj(cobj string, j int) string {
	return cobj + " load_assignment.endpoints[" + strconv.Itoa(j) + "]"
}

// endpoint returns the address and weight of lb_endpoints[k] of locality j,
// whether to use it and whether it is valid. An invalid endpoint records an
// issue; a valid but excluded one (unhealthy) records a note. Object names
// are built only when needed: this runs for every endpoint.
func (t *translator) endpoint(cobj string, j, k int, lbe *endpointv3.LbEndpoint) (ap netip.AddrPort, w uint32, use, valid bool) {
	bad := func(format string, args ...any) (netip.AddrPort, uint32, bool, bool) {
		t.issue(localityObj(cobj, j)+".lb_endpoints["+strconv.Itoa(k)+"]", format, args...)
		return netip.AddrPort{}, 0, false, false
	}
	if _, isName := lbe.GetHostIdentifier().(*endpointv3.LbEndpoint_EndpointName); isName {
		return bad("endpoint_name (named endpoints) is not supported; give the endpoint a socket_address")
	}
	sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
	if sa == nil {
		return bad("address is not a socket_address (pipe and internal addresses are not supported)")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return bad("address %q is not an IP literal; compat mode resolves no names, use an IP address", sa.GetAddress())
	}
	ip = ip.Unmap()
	switch {
	case ip.Zone() != "":
		return bad("address %q has a zone; scoped addresses are not supported", sa.GetAddress())
	case ip.IsUnspecified():
		return bad("address %s is unspecified; an endpoint needs a unicast address", ip)
	case sa.GetProtocol() != corev3.SocketAddress_TCP:
		return bad("protocol %s is not supported; compat mode redirects TCP connect() only", sa.GetProtocol())
	}
	if _, isNamed := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); isNamed {
		return bad("named_port is not supported; use port_value")
	}
	if sa.GetPortValue() == 0 {
		return bad("endpoint %s has port 0; set port_value", ip)
	}
	ap = netip.AddrPortFrom(ip, uint16(sa.GetPortValue())) // the schema limits port_value to 65535
	w = 1
	if lw := lbe.GetLoadBalancingWeight(); lw != nil {
		w = lw.GetValue()
	}
	if w == 0 { // the schema forbids it; keep the check for callers that skip it
		return bad("endpoint %s has load_balancing_weight 0; the minimum is 1", ap)
	}
	switch hs := lbe.GetHealthStatus(); hs {
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
		t.note(Ignored, cobj+" endpoint "+ap.String(), "excluded: health_status %s", hs)
		return ap, 0, false, true
	}
	return ap, w, true, true
}

// ---- listeners ----

func (t *translator) listener(i int, l *listenerv3.Listener) {
	if l == nil {
		t.issue(named("listener", i, ""), "is nil")
		return
	}
	obj := named("listener", i, l.GetName())
	if err := l.ValidateAll(); err != nil {
		t.envoyValidation(obj, err)
		return
	}
	if n := l.GetName(); n != "" {
		if prev, dup := t.listenerIdx[n]; dup {
			t.issue(obj, "duplicate listener name (first defined as %s)", prev)
			return
		}
		t.listenerIdx[n] = obj
	}
	switch {
	case l.GetApiListener() != nil:
		t.note(Ignored, obj, "api_listener takes no connections; not applied")
		return
	case l.GetInternalListener() != nil:
		t.note(Ignored, obj, "internal listeners are not reachable by connect(); not applied")
		return
	}

	var keys []ServiceKey
	if k, ok := t.listenerAddr(obj, "address", l.GetAddress()); ok {
		keys = append(keys, k)
	}
	for j, aa := range l.GetAdditionalAddresses() {
		if k, ok := t.listenerAddr(obj, fmt.Sprintf("additional_addresses[%d]", j), aa.GetAddress()); ok {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	src := source{obj: obj, lobj: obj, name: l.GetName(), listener: l.GetName()}

	fc, fobj := t.pickChain(obj, l, keys, src)
	if fc == nil {
		return
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		t.notApplied(keys, nil, src, Note{Kind: Ignored, Object: fobj, Reason: "has no filters; listener not applied"})
		return
	}
	for _, f := range filters[:len(filters)-1] {
		t.note(NeedsEnhanced, fobj+" filter "+strconv.Quote(f.GetName()), "network filters before the terminal filter are not applied in compat mode")
	}
	term := filters[len(filters)-1]
	tobj := fobj + " filter " + strconv.Quote(term.GetName())
	tc := term.GetTypedConfig()
	if tc == nil {
		t.notApplied(keys, nil, src, Note{Kind: NotSupported, Object: tobj,
			Reason: "has no typed_config (config_discovery is not supported); listener not applied"})
		return
	}
	applied := false
	switch {
	case tc.MessageIs((*tcpv3.TcpProxy)(nil)):
		tp := new(tcpv3.TcpProxy)
		if err := tc.UnmarshalTo(tp); err != nil {
			t.issue(tobj, "decode tcp_proxy: %v", err)
			return
		}
		applied = t.tcpProxy(tobj, keys, src, tp)
	case tc.MessageIs((*hcmv3.HttpConnectionManager)(nil)):
		h := new(hcmv3.HttpConnectionManager)
		if err := tc.UnmarshalTo(h); err != nil {
			t.issue(tobj, "decode http_connection_manager: %v", err)
			return
		}
		applied = t.hcm(tobj, keys, src, h)
	default:
		t.notApplied(keys, nil, src, Note{Kind: NotSupported, Object: tobj, Reason: fmt.Sprintf(
			"terminal filter type %s is not supported (use tcp_proxy or http_connection_manager); listener not applied", typeName(tc))})
	}
	if applied {
		t.unapplied(obj, l, t.rules.listener)
		t.unapplied(fobj, fc, t.rules.chain)
	}
}

func typeName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	if i := strings.LastIndexByte(u, '/'); i >= 0 {
		return u[i+1:]
	}
	return u
}

func (t *translator) listenerAddr(obj, field string, a *corev3.Address) (ServiceKey, bool) {
	sa := a.GetSocketAddress()
	if sa == nil {
		t.note(Ignored, obj, "%s is not a socket_address; only IP listeners are reachable by connect()", field)
		return ServiceKey{}, false
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		t.note(Ignored, obj, "%s protocol %s: compat mode redirects TCP connect() only", field, sa.GetProtocol())
		return ServiceKey{}, false
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		t.issue(obj, "%s %q is not an IP literal", field, sa.GetAddress())
		return ServiceKey{}, false
	}
	ip = ip.Unmap()
	if ip.Zone() != "" {
		t.issue(obj, "%s %q has a zone; scoped addresses are not supported", field, sa.GetAddress())
		return ServiceKey{}, false
	}
	if _, isNamed := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); isNamed {
		t.issue(obj, "%s uses named_port; use port_value", field)
		return ServiceKey{}, false
	}
	if sa.GetPortValue() == 0 {
		t.issue(obj, "%s has port 0, which no connect() targets; set port_value", field)
		return ServiceKey{}, false
	}
	if sa.GetIpv4Compat() && ip.Is6() && ip.IsUnspecified() {
		t.note(Ignored, obj, "%s ipv4_compat is ignored: [::]:%d matches IPv6 destinations only; add a 0.0.0.0:%d listener for IPv4", field, sa.GetPortValue(), sa.GetPortValue())
	}
	return ServiceKey{Addr: ip, Port: uint16(sa.GetPortValue())}, true
}

// pickChain returns the filter chain that applies to every connection: the
// one chain without a filter_chain_match, else default_filter_chain. Without
// one the listener is not applied (its specific keys become passthrough).
// Two chains without a match are an issue: Envoy rejects chains with the
// same matching rules.
func (t *translator) pickChain(obj string, l *listenerv3.Listener, keys []ServiceKey, src source) (*listenerv3.FilterChain, string) {
	if l.GetFilterChainMatcher() != nil {
		if d := l.GetDefaultFilterChain(); d != nil {
			t.note(NeedsEnhanced, obj, "filter_chain_matcher selects chains by connection attributes; only default_filter_chain is applied")
			return d, obj + " default_filter_chain"
		}
		t.notApplied(keys, nil, src, Note{Kind: NeedsEnhanced, Object: obj,
			Reason: "filter_chain_matcher selects chains by connection attributes and there is no default_filter_chain; listener not applied"})
		return nil, ""
	}
	var pick *listenerv3.FilterChain
	var pobj string
	pj := -1
	for j, fc := range l.GetFilterChains() {
		fobj := obj + " " + named("filter_chain", j, fc.GetName())
		if m := fc.GetFilterChainMatch(); m != nil && populated(m.ProtoReflect()) {
			t.note(NeedsEnhanced, fobj, "filter_chain_match needs connection attributes (SNI, ALPN, transport, source); chain not applied")
			continue
		}
		if pick != nil {
			t.issue(fobj, "has no filter_chain_match, like %s; Envoy rejects filter chains with the same matching rules: give one of them a filter_chain_match or remove it",
				named("filter_chain", pj, pick.GetName()))
			continue
		}
		pick, pobj, pj = fc, fobj, j
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		if pick == nil {
			return d, obj + " default_filter_chain"
		}
		t.note(Ignored, obj+" default_filter_chain", "never used: %s has no filter_chain_match, so it takes every connection",
			named("filter_chain", pj, pick.GetName()))
	}
	if pick == nil {
		t.notApplied(keys, nil, src, Note{Kind: Ignored, Object: obj, Reason: "no filter chain applies to every connection; listener not applied"})
		return nil, ""
	}
	return pick, pobj
}

// populated reports whether any field of m is set.
func populated(m protoreflect.Message) bool {
	set := false
	m.Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { set = true; return false })
	return set
}

type rawWeight struct {
	name   string
	weight uint32
}

// tcpProxy claims the listener's keys for the tcp_proxy's clusters and
// reports whether it applies.
func (t *translator) tcpProxy(obj string, keys []ServiceKey, src source, tp *tcpv3.TcpProxy) bool {
	if err := tp.ValidateAll(); err != nil {
		t.envoyValidation(obj, err)
		return false
	}
	var ws []rawWeight
	switch cs := tp.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		ws = []rawWeight{{cs.Cluster, 1}}
	case *tcpv3.TcpProxy_WeightedClusters:
		for _, cw := range cs.WeightedClusters.GetClusters() {
			ws = append(ws, rawWeight{cw.GetName(), cw.GetWeight()})
		}
	default:
		t.issue(obj, "tcp_proxy has neither cluster nor weighted_clusters")
		return false
	}
	t.unapplied(obj, tp, t.rules.tcpProxy)
	for _, k := range keys {
		t.addClaim(claim{key: k, src: src, ws: ws})
	}
	return true
}

// hcm claims the listener's keys for the virtual hosts of an inline
// route_config and reports whether it applies.
func (t *translator) hcm(obj string, keys []ServiceKey, src source, h *hcmv3.HttpConnectionManager) bool {
	if err := h.ValidateAll(); err != nil {
		t.envoyValidation(obj, err)
		return false
	}
	var rc *routev3.RouteConfiguration
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		rc = rs.RouteConfig
	case *hcmv3.HttpConnectionManager_Rds:
		t.notApplied(keys, nil, src, Note{Kind: NotSupported, Object: obj,
			Reason: "rds (route discovery) is not supported by the local-file translator; inline the routes as route_config; listener not applied"})
		return false
	case *hcmv3.HttpConnectionManager_ScopedRoutes:
		t.notApplied(keys, nil, src, Note{Kind: NeedsEnhanced, Object: obj,
			Reason: "scoped_routes select routes by request headers; listener not applied"})
		return false
	default:
		t.issue(obj, "http_connection_manager has no route_config")
		return false
	}
	for _, f := range h.GetHttpFilters() {
		fobj := obj + " http_filter " + strconv.Quote(f.GetName())
		if tc := f.GetTypedConfig(); tc != nil && tc.MessageIs((*routerv3.Router)(nil)) {
			r := new(routerv3.Router)
			if err := tc.UnmarshalTo(r); err != nil {
				t.issue(fobj, "decode router: %v", err)
				continue
			}
			t.unapplied(fobj, r, t.rules.router)
			continue
		}
		if f.GetName() == "envoy.filters.http.router" && f.GetTypedConfig() == nil {
			continue
		}
		t.note(NeedsEnhanced, fobj, "HTTP filters are not applied in compat mode")
	}
	t.unapplied(obj, h, t.rules.hcm)
	walked := make([]bool, len(rc.GetVirtualHosts())) // virtual hosts whose fields are checked
	for _, lk := range keys {
		if lk.Wildcard() {
			t.hcmWildcard(src, lk, rc, walked)
		} else {
			t.hcmVIP(src, lk, rc, walked)
		}
	}
	return true
}

// hcmWildcard maps each virtual host of a 0.0.0.0:port / [::]:port listener
// to the VIPs its IP-literal domains name ("*" names the wildcard itself).
func (t *translator) hcmWildcard(lsrc source, lk ServiceKey, rc *routev3.RouteConfiguration, walked []bool) {
	for vi, vh := range rc.GetVirtualHosts() {
		vobj := lsrc.lobj + " " + named("virtual_host", vi, vh.GetName())
		var vkeys []ServiceKey
		var vdomains []string // the domain naming each of vkeys; "" for "*"
		add := func(k ServiceKey, d string) {
			if !slices.Contains(vkeys, k) {
				vkeys = append(vkeys, k)
				vdomains = append(vdomains, d)
			}
		}
		for _, d := range vh.GetDomains() {
			if d == "*" {
				add(lk, "")
				continue
			}
			ip, port, ok := domainIP(d)
			if !ok || ip.IsUnspecified() {
				continue // a host name: matched by Host header only
			}
			if port != 0 && port != lk.Port {
				t.note(Ignored, vobj, "domain %q: port differs from the listener port %d, so no connection to this listener has that Host", d, lk.Port)
				continue
			}
			if ip.Is4() != lk.Addr.Is4() {
				t.note(Ignored, vobj, "domain %q: address family differs from the listener address %s", d, lk.Addr)
				continue
			}
			add(ServiceKey{Addr: ip, Port: lk.Port}, d)
		}
		if len(vkeys) == 0 {
			t.note(NeedsEnhanced, vobj, "no IP-literal or \"*\" domain: selected by Host header only")
			continue
		}
		src := source{obj: vobj, lobj: lsrc.lobj, name: vh.GetName(), listener: lsrc.listener}
		ws, ok := t.vhostClusters(vobj, vh, vkeys, vdomains, src, &walked[vi])
		if !ok {
			continue
		}
		for j, k := range vkeys {
			t.addClaim(claim{key: k, src: src, domain: vdomains[j], ws: ws})
		}
	}
}

// hcmVIP picks the virtual host of a VIP:port listener that a connection to
// the VIP uses: one whose domains name the VIP, else the "*" one.
func (t *translator) hcmVIP(lsrc source, lk ServiceKey, rc *routev3.RouteConfiguration, walked []bool) {
	vhs := rc.GetVirtualHosts()
	vobj := func(vi int) string { return lsrc.lobj + " " + named("virtual_host", vi, vhs[vi].GetName()) }
	exact, star := -1, -1
	for vi, vh := range vhs {
		for _, d := range vh.GetDomains() {
			if d == "*" && star < 0 {
				star = vi
			}
			ip, port, ok := domainIP(d)
			if !ok || ip != lk.Addr {
				continue
			}
			if port != 0 && port != lk.Port {
				t.note(Ignored, vobj(vi), "domain %q: port differs from the listener port %d, so no connection to this listener has that Host", d, lk.Port)
				continue
			}
			if exact < 0 {
				exact = vi
			}
		}
	}
	chosen := exact
	if chosen < 0 {
		chosen = star
	}
	for vi := range vhs {
		if vi == chosen {
			continue
		}
		if chosen < 0 {
			t.note(NeedsEnhanced, vobj(vi), "selected by Host header only; no virtual host names %s or \"*\"", lk.Addr)
		} else {
			t.note(NeedsEnhanced, vobj(vi), "selected by Host header only; compat mode sends every connection to %s to virtual host %q", lk, vhs[chosen].GetName())
		}
	}
	if chosen < 0 {
		t.notApplied([]ServiceKey{lk}, nil, lsrc, Note{Kind: NeedsEnhanced, Object: lsrc.lobj, Reason: fmt.Sprintf(
			"no virtual host names %s or \"*\", so none applies to every connection to %s", lk.Addr, lk)})
		return
	}
	vh := vhs[chosen]
	src := source{obj: vobj(chosen), lobj: lsrc.lobj, name: vh.GetName(), listener: lsrc.listener}
	if ws, ok := t.vhostClusters(src.obj, vh, []ServiceKey{lk}, nil, src, &walked[chosen]); ok {
		t.addClaim(claim{key: lk, src: src, ws: ws})
	}
}

// vhostClusters returns the clusters of vh's catch-all route. Without one,
// the virtual host is not applied and its specific keys (domains gives the
// domain naming each, nil for a VIP listener's own key) become passthrough.
// The first time it is called for a virtual host (*walked false) it notes
// the unapplied fields of the virtual host and the route.
func (t *translator) vhostClusters(vobj string, vh *routev3.VirtualHost, keys []ServiceKey, domains []string, src source, walked *bool) ([]rawWeight, bool) {
	ws, r, robj, fail := t.catchAll(vobj, vh)
	if fail.Kind != 0 {
		t.notApplied(keys, domains, src, fail)
		return nil, false
	}
	if !*walked {
		*walked = true
		t.unapplied(vobj, vh, t.rules.vhost)
		t.unapplied(robj, r, t.rules.route)
	}
	return ws, true
}

// domainIP parses an IP-literal domain: "10.0.0.1", "10.0.0.1:80",
// "fd00::1", "[fd00::1]", "[fd00::1]:80". Port 0 means none given.
func domainIP(d string) (netip.Addr, uint16, bool) {
	if ip, err := netip.ParseAddr(d); err == nil && ip.Zone() == "" {
		return ip.Unmap(), 0, true
	}
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		if ip, err := netip.ParseAddr(d[1 : len(d)-1]); err == nil && ip.Is6() && ip.Zone() == "" {
			return ip.Unmap(), 0, true
		}
	}
	if ap, err := netip.ParseAddrPort(d); err == nil && ap.Port() != 0 && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), ap.Port(), true
	}
	return netip.Addr{}, 0, false
}

// catchAll returns the clusters of the first route of vh that matches every
// request (match prefix "/" and nothing else), that route and its object,
// noting each route before it. When there is none, or it does not name its
// clusters, fail says why (the caller records it).
func (t *translator) catchAll(vobj string, vh *routev3.VirtualHost) (ws []rawWeight, r *routev3.Route, robj string, fail Note) {
	for ri, r := range vh.GetRoutes() {
		robj := vobj + " " + named("route", ri, r.GetName())
		if !isCatchAll(r.GetMatch()) {
			t.note(NeedsEnhanced, robj, "matches on %s; compat mode cannot see the request, so these requests go to the catch-all route's clusters", describeMatch(r.GetMatch()))
			continue
		}
		ra, isRoute := r.GetAction().(*routev3.Route_Route)
		if !isRoute {
			return nil, nil, "", Note{Kind: NeedsEnhanced, Object: robj,
				Reason: fmt.Sprintf("catch-all route action %s is not a cluster route; virtual host gets no service", actionName(r))}
		}
		switch cs := ra.Route.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster:
			return []rawWeight{{cs.Cluster, 1}}, r, robj, Note{}
		case *routev3.RouteAction_WeightedClusters:
			var sum uint64
			for _, cw := range cs.WeightedClusters.GetClusters() {
				sum += uint64(cw.GetWeight().GetValue())
			}
			if tw := cs.WeightedClusters.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != sum {
				// deprecated; current Envoy (and gRPC's xDS clients) use the sum
				t.note(Ignored, robj, "weighted_clusters total_weight %d differs from the sum of the cluster weights, %d: the sum is used, as current Envoy does (total_weight is deprecated: remove it)", tw.GetValue(), sum)
			}
			for _, cw := range cs.WeightedClusters.GetClusters() {
				if cw.GetName() == "" {
					return nil, nil, "", Note{Kind: NeedsEnhanced, Object: robj, Reason: fmt.Sprintf(
						"weighted cluster chosen by cluster_header %q needs the request; virtual host gets no service", cw.GetClusterHeader())}
				}
				ws = append(ws, rawWeight{cw.GetName(), cw.GetWeight().GetValue()})
			}
			return ws, r, robj, Note{}
		default:
			return nil, nil, "", Note{Kind: NeedsEnhanced, Object: robj,
				Reason: "catch-all route picks its cluster per request (cluster_header or cluster_specifier_plugin); virtual host gets no service"}
		}
	}
	return nil, nil, "", Note{Kind: NeedsEnhanced, Object: vobj,
		Reason: "no catch-all route (match prefix \"/\" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service"}
}

func isCatchAll(m *routev3.RouteMatch) bool {
	if m.GetPrefix() != "/" {
		return false
	}
	only := true
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		switch fd.Name() {
		case "prefix", "case_sensitive":
			return true
		}
		only = false
		return false
	})
	return only
}

func describeMatch(m *routev3.RouteMatch) string {
	var parts []string
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if ps.Prefix != "/" {
			parts = append(parts, "path prefix "+strconv.Quote(ps.Prefix))
		}
	case *routev3.RouteMatch_Path:
		parts = append(parts, "path "+strconv.Quote(ps.Path))
	case *routev3.RouteMatch_SafeRegex:
		parts = append(parts, "path regex "+strconv.Quote(ps.SafeRegex.GetRegex()))
	case *routev3.RouteMatch_PathSeparatedPrefix:
		parts = append(parts, "path_separated_prefix "+strconv.Quote(ps.PathSeparatedPrefix))
	case *routev3.RouteMatch_ConnectMatcher_:
		parts = append(parts, "CONNECT requests")
	case *routev3.RouteMatch_PathMatchPolicy:
		parts = append(parts, "path_match_policy")
	}
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.ContainingOneof() == nil && fd.Name() != "case_sensitive" {
			parts = append(parts, string(fd.Name()))
		}
		return true
	})
	if len(parts) == 0 {
		return "the request"
	}
	return strings.Join(parts, ", ")
}

func actionName(r *routev3.Route) string {
	switch r.GetAction().(type) {
	case *routev3.Route_Redirect:
		return "redirect"
	case *routev3.Route_DirectResponse:
		return "direct_response"
	case *routev3.Route_FilterAction:
		return "filter_action"
	case *routev3.Route_NonForwardingAction:
		return "non_forwarding_action"
	}
	return "(none)"
}

// ---- service keys ----

// source is what a claim on a service key comes from.
type source struct {
	obj            string // the listener or virtual host that defines the service
	lobj           string // its listener
	name, listener string // Service.Name and Service.Listener
}

// claimRank orders the claims on one key the way Envoy picks a listener: one
// listening on the address itself takes the connection before a wildcard
// listener, whose virtual hosts name the address only as a domain.
type claimRank uint8

const (
	rankDomain   claimRank = iota + 1 // an IP-literal domain of a wildcard listener's virtual host
	rankListener                      // a listener's own address ("*" of a wildcard listener included)
)

// claim is one bid for a service key: served by ws, or passthrough (the
// source is not applied and connections keep their original destination).
// Claims are resolved once every listener is read (resolveClaims), so the
// outcome does not depend on the order of the input.
type claim struct {
	key    ServiceKey
	src    source
	domain string // the domain naming key; "" for a listener's own address
	ws     []rawWeight
	pass   bool
	note   int // pass: the index in translator.notes of the note to complete
	first  bool
	next   int // the next claim on key, or -1
}

func (c *claim) rank() claimRank {
	if c.domain != "" {
		return rankDomain
	}
	return rankListener
}

func (c *claim) sobj() string { return "service " + c.key.String() + " (" + c.src.obj + ")" }

func (t *translator) addClaim(c claim) {
	i := len(t.claims)
	c.next = -1
	j, seen := t.firstClaim[c.key]
	c.first = !seen
	t.claims = append(t.claims, c)
	if !seen {
		t.firstClaim[c.key] = i
		return
	}
	for t.claims[j].next >= 0 {
		j = t.claims[j].next
	}
	t.claims[j].next = i
}

// notApplied records n, about a listener or virtual host compat mode cannot
// serve, and a passthrough claim for each specific (not wildcard) key of it;
// domains gives the domain naming each key (nil for a listener's own
// addresses). resolveClaims completes n with the keys that end up
// passthrough: a wildcard key needs no entry, since connections no key
// matches keep their original destination anyway.
func (t *translator) notApplied(keys []ServiceKey, domains []string, src source, n Note) {
	idx := len(t.notes)
	t.notes = append(t.notes, n)
	for i, k := range keys {
		if k.Wildcard() {
			continue
		}
		d := ""
		if domains != nil {
			d = domains[i]
		}
		t.addClaim(claim{key: k, src: src, domain: d, pass: true, note: idx})
	}
}

// resolveClaims turns the claims into services. The first claim of the
// highest rank wins a key. A lower-ranked claim (a virtual host domain
// naming the address of a listener) is noted; another claim of the same
// rank is a duplicate issue, except for two passthrough virtual hosts, which
// agree. Every served claim is validated, winning or not.
func (t *translator) resolveClaims() {
	var passKeys map[int][]ServiceKey // note index -> its passthrough keys
	for i := range t.claims {
		if !t.claims[i].first {
			continue
		}
		win := i
		for j := t.claims[i].next; j >= 0; j = t.claims[j].next {
			if t.claims[j].rank() > t.claims[win].rank() {
				win = j
			}
		}
		w := &t.claims[win]
		for j := i; j >= 0; j = t.claims[j].next {
			c := &t.claims[j]
			if j != win {
				switch {
				case c.rank() < w.rank():
					t.note(Ignored, c.src.obj, "domain %q: %s listens on %s and takes its connections before this wildcard listener, so this virtual host gets none of them", c.domain, w.src.lobj, c.key)
				case c.pass && w.pass && c.rank() == rankDomain:
				default:
					t.issue(c.sobj(), "duplicate service key %s: also defined by %s; name the address in one listener or virtual host only", c.key, w.src.obj)
				}
			}
			if c.pass {
				continue
			}
			list, pass, ok := t.weights(c)
			switch {
			case !ok || j != win:
			case pass && c.key.Wildcard():
				// Sent to an ORIGINAL_DST cluster: connections no key
				// matches keep their original destination anyway.
			case pass:
				t.services[c.key] = Service{Name: c.src.name, Listener: c.src.listener}
			default:
				t.services[c.key] = Service{Name: c.src.name, Listener: c.src.listener, Clusters: list}
			}
		}
		if w.pass {
			t.services[w.key] = Service{Name: w.src.name, Listener: w.src.listener}
			if passKeys == nil {
				passKeys = make(map[int][]ServiceKey)
			}
			passKeys[w.note] = append(passKeys[w.note], w.key)
		}
	}
	for idx, keys := range passKeys {
		slices.SortFunc(keys, ServiceKey.Compare)
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = k.String()
		}
		t.notes[idx].Reason += "; connections to " + strings.Join(names, ", ") + " keep their original destination"
	}
}

// weights validates the clusters of a served claim and returns them in
// canonical form; pass is true when the claim's whole weight is on
// ORIGINAL_DST clusters (list is then empty: the service is passthrough).
func (t *translator) weights(c *claim) (list []WeightedCluster, pass, ok bool) {
	ok = true
	// Merge repeated names (sorted, so duplicates are adjacent).
	sorted := make([]rawWeight, 0, len(c.ws))
	for _, w := range c.ws {
		if w.name == "" {
			t.issue(c.sobj(), "weighted cluster has an empty name")
			ok = false
			continue
		}
		if _, seen := t.clusterSeen[w.name]; !seen {
			t.issue(c.sobj(), "unknown cluster %q", w.name)
			ok = false
			continue
		}
		sorted = append(sorted, w)
	}
	slices.SortFunc(sorted, func(a, b rawWeight) int { return strings.Compare(a.name, b.name) })
	var total, origDstWeight uint64
	var origDstName string
	list = make([]WeightedCluster, 0, len(sorted))
	for i := 0; i < len(sorted); {
		name := sorted[i].name
		w := uint64(sorted[i].weight)
		for i++; i < len(sorted) && sorted[i].name == name; i++ {
			w += uint64(sorted[i].weight)
		}
		if w == 0 {
			continue
		}
		total += w
		if _, od := t.origDst[name]; od {
			origDstWeight += w
			origDstName = name
			continue
		}
		cl, valid := t.clusters[name]
		if !valid {
			ok = false // the cluster has an issue of its own
			continue
		}
		if w <= math.MaxUint32 {
			list = append(list, WeightedCluster{Name: name, Weight: uint32(w)})
		}
		t.checkFamily(c.sobj, c.key, cl)
	}
	if !ok {
		return nil, false, false
	}
	switch {
	case total == 0:
		t.issue(c.sobj(), "total weight is 0; give at least one cluster a weight above 0")
		return nil, false, false
	case total > math.MaxUint32:
		t.issue(c.sobj(), "cluster weights sum to %d, more than %d", total, uint32(math.MaxUint32))
		return nil, false, false
	case origDstWeight == total:
		return nil, true, true
	case origDstWeight > 0:
		t.issue(c.sobj(), "weighted_clusters gives ORIGINAL_DST cluster %q a share next to other clusters; compat mode either rewrites a service's connections or leaves them all at their original destination; split between STATIC clusters only", origDstName)
		return nil, false, false
	case len(list) > MaxWeightedClusters:
		t.issue(c.sobj(), "splits across %d clusters, more than the limit of %d", len(list), MaxWeightedClusters)
		return nil, false, false
	}
	return list, false, true
}

// checkFamily rejects endpoints of another address family than the service:
// the connect() rewrite cannot change a socket's family.
func (t *translator) checkFamily(sobj func() string, k ServiceKey, c Cluster) {
	var bad []netip.AddrPort
	for _, e := range c.Endpoints {
		if e.Addr.Addr().Is4() != k.Addr.Is4() {
			bad = append(bad, e.Addr)
		}
	}
	if len(bad) == 0 {
		return
	}
	fam, other := "IPv4", "IPv6"
	if !k.Addr.Is4() {
		fam, other = other, fam
	}
	more := ""
	if len(bad) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(bad)-1)
	}
	t.issue(sobj(), "cluster %q endpoint %s%s is %s but the service address is %s; connect() cannot be redirected across address families", c.Name, bad[0], more, other, fam)
}
