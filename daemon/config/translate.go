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
		clusters:    make(map[string]Cluster, len(clusters)),
		clusterSeen: make(map[string]string, len(clusters)),
		services:    make(map[ServiceKey]Service, len(listeners)),
		origin:      make(map[ServiceKey]string, len(listeners)),
		listenerIdx: make(map[string]string, len(listeners)),
	}
	for i, c := range clusters {
		t.cluster(i, c)
	}
	for i, l := range listeners {
		t.listener(i, l)
	}
	if len(t.issues) > 0 {
		return nil, &ValidationError{Issues: t.issues}
	}
	m := &Model{Services: t.services, Clusters: t.clusters, Unsupported: t.notes}
	sortNotes(m.Unsupported)
	m.Version = m.computeVersion()
	return m, nil
}

type translator struct {
	issues   []Issue
	notes    []Note
	clusters map[string]Cluster
	// clusterSeen maps every cluster name met (valid or not) to its object
	// description, to report duplicates and to not report references to an
	// invalid cluster as unknown.
	clusterSeen map[string]string
	services    map[ServiceKey]Service
	origin      map[ServiceKey]string // service key -> object that defined it
	listenerIdx map[string]string     // listener name -> object description
}

func (t *translator) issue(obj, format string, args ...any) {
	t.issues = append(t.issues, Issue{Object: obj, Msg: fmt.Sprintf(format, args...)})
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
			t.issue(obj, "type ORIGINAL_DST is not supported (connections no service matches already keep their original destination); remove the cluster or use type STATIC")
			ok = false
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
	case c.GetLbPolicy() == clusterv3.Cluster_ROUND_ROBIN:
		policy = RoundRobin
	case c.GetLbPolicy() == clusterv3.Cluster_RANDOM:
		policy = Random
	default:
		t.issue(obj, "lb_policy %s is not supported; use ROUND_ROBIN or RANDOM", c.GetLbPolicy())
		ok = false
	}

	if c.GetTransportSocket() != nil || len(c.GetTransportSocketMatches()) > 0 {
		t.note(Ignored, obj, "transport_socket is not applied: compat mode redirects the client's own connection, so upstream TLS is not originated")
	}
	if len(c.GetHealthChecks()) > 0 {
		t.note(Ignored, obj, "health_checks are not performed in compat mode; every listed endpoint receives connections")
	}
	if c.GetOutlierDetection() != nil {
		t.note(Ignored, obj, "outlier_detection is not performed in compat mode")
	}
	if c.GetLbSubsetConfig() != nil {
		t.note(Ignored, obj, "lb_subset_config is ignored; all endpoints form one set")
	}

	eps, epOK := t.endpoints(obj, c.GetLoadAssignment())
	if !ok || !epOK {
		return
	}
	t.clusters[name] = Cluster{Name: name, Policy: policy, Endpoints: eps}
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

	fc, fobj := t.pickChain(obj, l)
	if fc == nil {
		return
	}
	if fc.GetTransportSocket() != nil {
		t.note(Ignored, fobj, "transport_socket is not applied: compat mode does not terminate TLS; the client's bytes reach the endpoint unchanged")
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		t.note(Ignored, fobj, "has no filters; listener not applied")
		return
	}
	for _, f := range filters[:len(filters)-1] {
		t.note(NeedsEnhanced, fobj+" filter "+strconv.Quote(f.GetName()), "network filters before the terminal filter are not applied in compat mode")
	}
	term := filters[len(filters)-1]
	tobj := fobj + " filter " + strconv.Quote(term.GetName())
	tc := term.GetTypedConfig()
	if tc == nil {
		t.note(NotSupported, tobj, "has no typed_config (config_discovery is not supported); listener not applied")
		return
	}
	switch {
	case tc.MessageIs((*tcpv3.TcpProxy)(nil)):
		tp := new(tcpv3.TcpProxy)
		if err := tc.UnmarshalTo(tp); err != nil {
			t.issue(tobj, "decode tcp_proxy: %v", err)
			return
		}
		t.tcpProxy(obj, tobj, l.GetName(), keys, tp)
	case tc.MessageIs((*hcmv3.HttpConnectionManager)(nil)):
		h := new(hcmv3.HttpConnectionManager)
		if err := tc.UnmarshalTo(h); err != nil {
			t.issue(tobj, "decode http_connection_manager: %v", err)
			return
		}
		t.hcm(obj, tobj, l.GetName(), keys, h)
	default:
		t.note(NotSupported, tobj, "terminal filter type %s is not supported (use tcp_proxy or http_connection_manager); listener not applied", typeName(tc))
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
// first chain without a filter_chain_match, else default_filter_chain.
func (t *translator) pickChain(obj string, l *listenerv3.Listener) (*listenerv3.FilterChain, string) {
	if l.GetFilterChainMatcher() != nil {
		t.note(NeedsEnhanced, obj, "filter_chain_matcher selects chains by connection attributes; only default_filter_chain is applied")
		if d := l.GetDefaultFilterChain(); d != nil {
			return d, obj + " default_filter_chain"
		}
		return nil, ""
	}
	var pick *listenerv3.FilterChain
	var pobj string
	for j, fc := range l.GetFilterChains() {
		fobj := obj + " " + named("filter_chain", j, fc.GetName())
		if m := fc.GetFilterChainMatch(); m != nil && populated(m.ProtoReflect()) {
			t.note(NeedsEnhanced, fobj, "filter_chain_match needs connection attributes (SNI, ALPN, transport, source); chain not applied")
			continue
		}
		if pick == nil {
			pick, pobj = fc, fobj
		}
	}
	if pick == nil {
		if d := l.GetDefaultFilterChain(); d != nil {
			return d, obj + " default_filter_chain"
		}
		t.note(Ignored, obj, "no filter chain applies to every connection; listener not applied")
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

func (t *translator) tcpProxy(lobj, obj, listener string, keys []ServiceKey, tp *tcpv3.TcpProxy) {
	if err := tp.ValidateAll(); err != nil {
		t.envoyValidation(obj, err)
		return
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
		return
	}
	if tp.GetTunnelingConfig() != nil {
		t.note(NeedsEnhanced, obj, "tunneling_config (HTTP CONNECT tunneling) is not applied; connections go to the cluster directly")
	}
	if tp.GetMetadataMatch() != nil {
		t.note(Ignored, obj, "metadata_match (subset load balancing) is ignored")
	}
	if tp.GetOnDemand() != nil {
		t.note(NotSupported, obj, "on_demand cluster discovery is not supported")
	}
	for _, k := range keys {
		t.addService(k, Service{Name: listener, Listener: listener}, ws, lobj)
	}
}

func (t *translator) hcm(lobj, obj, listener string, keys []ServiceKey, h *hcmv3.HttpConnectionManager) {
	if err := h.ValidateAll(); err != nil {
		t.envoyValidation(obj, err)
		return
	}
	var rc *routev3.RouteConfiguration
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		rc = rs.RouteConfig
	case *hcmv3.HttpConnectionManager_Rds:
		t.note(NotSupported, obj, "rds (route discovery) is not supported by the local-file translator; inline the routes as route_config; listener not applied")
		return
	case *hcmv3.HttpConnectionManager_ScopedRoutes:
		t.note(NeedsEnhanced, obj, "scoped_routes select routes by request headers; listener not applied")
		return
	default:
		t.issue(obj, "http_connection_manager has no route_config")
		return
	}
	for _, f := range h.GetHttpFilters() {
		if tc := f.GetTypedConfig(); tc != nil && tc.MessageIs((*routerv3.Router)(nil)) {
			continue
		}
		if f.GetName() == "envoy.filters.http.router" && f.GetTypedConfig() == nil {
			continue
		}
		t.note(NeedsEnhanced, obj+" http_filter "+strconv.Quote(f.GetName()), "HTTP filters are not applied in compat mode")
	}
	for _, lk := range keys {
		if lk.Wildcard() {
			t.hcmWildcard(lobj, listener, lk, rc)
		} else {
			t.hcmVIP(lobj, listener, lk, rc)
		}
	}
}

// hcmWildcard maps each virtual host of a 0.0.0.0:port / [::]:port listener
// to the VIPs its IP-literal domains name ("*" names the wildcard itself).
func (t *translator) hcmWildcard(lobj, listener string, lk ServiceKey, rc *routev3.RouteConfiguration) {
	for vi, vh := range rc.GetVirtualHosts() {
		vobj := lobj + " " + named("virtual_host", vi, vh.GetName())
		var vkeys []ServiceKey
		add := func(k ServiceKey) {
			if !slices.Contains(vkeys, k) {
				vkeys = append(vkeys, k)
			}
		}
		for _, d := range vh.GetDomains() {
			if d == "*" {
				add(lk)
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
			add(ServiceKey{Addr: ip, Port: lk.Port})
		}
		if len(vkeys) == 0 {
			t.note(NeedsEnhanced, vobj, "no IP-literal or \"*\" domain: selected by Host header only")
			continue
		}
		ws, ok := t.catchAll(vobj, vh)
		if !ok {
			continue
		}
		for _, k := range vkeys {
			t.addService(k, Service{Name: vh.GetName(), Listener: listener}, ws, vobj)
		}
	}
}

// hcmVIP picks the virtual host of a VIP:port listener that a connection to
// the VIP uses: one whose domains name the VIP, else the "*" one.
func (t *translator) hcmVIP(lobj, listener string, lk ServiceKey, rc *routev3.RouteConfiguration) {
	vhs := rc.GetVirtualHosts()
	exact, star := -1, -1
	for vi, vh := range vhs {
		for _, d := range vh.GetDomains() {
			if d == "*" && star < 0 {
				star = vi
			}
			if ip, port, ok := domainIP(d); ok && ip == lk.Addr && (port == 0 || port == lk.Port) && exact < 0 {
				exact = vi
			}
		}
	}
	chosen := exact
	if chosen < 0 {
		chosen = star
	}
	for vi, vh := range vhs {
		if vi == chosen {
			continue
		}
		vobj := lobj + " " + named("virtual_host", vi, vh.GetName())
		if chosen < 0 {
			t.note(NeedsEnhanced, vobj, "selected by Host header only; no virtual host names %s or \"*\", so %s gets no service", lk.Addr, lk)
		} else {
			t.note(NeedsEnhanced, vobj, "selected by Host header only; compat mode sends every connection to %s to virtual host %q", lk, vhs[chosen].GetName())
		}
	}
	if chosen < 0 {
		return
	}
	vh := vhs[chosen]
	vobj := lobj + " " + named("virtual_host", chosen, vh.GetName())
	if ws, ok := t.catchAll(vobj, vh); ok {
		t.addService(lk, Service{Name: vh.GetName(), Listener: listener}, ws, vobj)
	}
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
// request (match prefix "/" and nothing else), noting each route before it.
func (t *translator) catchAll(vobj string, vh *routev3.VirtualHost) ([]rawWeight, bool) {
	for ri, r := range vh.GetRoutes() {
		robj := vobj + " " + named("route", ri, r.GetName())
		if !isCatchAll(r.GetMatch()) {
			t.note(NeedsEnhanced, robj, "matches on %s; compat mode cannot see the request, so these requests go to the catch-all route's clusters", describeMatch(r.GetMatch()))
			continue
		}
		ra, isRoute := r.GetAction().(*routev3.Route_Route)
		if !isRoute {
			t.note(NeedsEnhanced, robj, "catch-all route action %s is not a cluster route; virtual host gets no service", actionName(r))
			return nil, false
		}
		switch cs := ra.Route.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster:
			return []rawWeight{{cs.Cluster, 1}}, true
		case *routev3.RouteAction_WeightedClusters:
			var ws []rawWeight
			for _, cw := range cs.WeightedClusters.GetClusters() {
				if cw.GetName() == "" {
					t.note(NeedsEnhanced, robj, "weighted cluster chosen by cluster_header %q needs the request; virtual host gets no service", cw.GetClusterHeader())
					return nil, false
				}
				ws = append(ws, rawWeight{cw.GetName(), cw.GetWeight().GetValue()})
			}
			return ws, true
		default:
			t.note(NeedsEnhanced, robj, "catch-all route picks its cluster per request (cluster_header or cluster_specifier_plugin); virtual host gets no service")
			return nil, false
		}
	}
	t.note(NeedsEnhanced, vobj, "no catch-all route (match prefix \"/\" without other matchers), which compat mode needs to pick clusters per connection; virtual host gets no service")
	return nil, false
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

// addService validates and records one service. obj names its source.
func (t *translator) addService(k ServiceKey, svc Service, ws []rawWeight, obj string) {
	sobj := func() string { return "service " + k.String() + " (" + obj + ")" }
	if prev, dup := t.origin[k]; dup {
		t.issue(sobj(), "duplicate service key %s: also defined by %s", k, prev)
		return
	}
	t.origin[k] = obj
	ok := true
	// Merge repeated names (sorted, so duplicates are adjacent).
	sorted := make([]rawWeight, 0, len(ws))
	for _, w := range ws {
		if w.name == "" {
			t.issue(sobj(), "weighted cluster has an empty name")
			ok = false
			continue
		}
		if _, seen := t.clusterSeen[w.name]; !seen {
			t.issue(sobj(), "unknown cluster %q", w.name)
			ok = false
			continue
		}
		sorted = append(sorted, w)
	}
	slices.SortFunc(sorted, func(a, b rawWeight) int { return strings.Compare(a.name, b.name) })
	var total uint64
	list := make([]WeightedCluster, 0, len(sorted))
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
		c, valid := t.clusters[name]
		if !valid {
			ok = false // the cluster has an issue of its own
			continue
		}
		if w <= math.MaxUint32 {
			list = append(list, WeightedCluster{Name: name, Weight: uint32(w)})
		}
		t.checkFamily(sobj, k, c)
	}
	if !ok {
		return
	}
	switch {
	case total == 0:
		t.issue(sobj(), "total weight is 0; give at least one cluster a weight above 0")
		return
	case total > math.MaxUint32:
		t.issue(sobj(), "cluster weights sum to %d, more than %d", total, uint32(math.MaxUint32))
		return
	case len(list) > MaxWeightedClusters:
		t.issue(sobj(), "splits across %d clusters, more than the limit of %d", len(list), MaxWeightedClusters)
		return
	}
	svc.Clusters = list
	t.services[k] = svc
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
