package manifest

import (
	"fmt"
	"path"
	"reflect"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// clusterScoped kinds have no namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true}

// Validate checks the set the way the API server would where strict
// decoding cannot: names, namespaces, references between the objects, and
// the DaemonSet's pod template. It returns every problem found.
func Validate(objs []Object) []error {
	v := &validator{objs: objs}
	for _, o := range objs {
		v.object(o)
	}
	return v.errs
}

type validator struct {
	objs []Object
	errs []error
}

func (v *validator) errorf(o Object, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s (%s): %s", o.Key(), o.Source, fmt.Sprintf(format, args...)))
}

func (v *validator) has(kind, namespace, name string) bool {
	for _, o := range v.objs {
		if o.Kind == kind && o.Namespace == namespace && o.Name == name {
			return true
		}
	}
	return false
}

func (v *validator) object(o Object) {
	if o.Name == "" {
		v.errorf(o, "metadata.name is required")
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(o.Name) {
			v.errorf(o, "metadata.name %q: %s", o.Name, msg)
		}
	}
	if clusterScoped[o.Kind] {
		if o.Namespace != "" {
			v.errorf(o, "cluster-scoped %s has metadata.namespace %q", o.Kind, o.Namespace)
		}
	} else if o.Namespace == "" {
		v.errorf(o, "metadata.namespace is required (kubectl would use the current context's)")
	} else {
		for _, msg := range validation.IsDNS1123Label(o.Namespace) {
			v.errorf(o, "metadata.namespace %q: %s", o.Namespace, msg)
		}
	}
	v.labels(o, objectMeta(o.Obj).Labels, "metadata.labels")
	switch obj := o.Obj.(type) {
	case *corev1.Namespace:
		for _, msg := range validation.IsDNS1123Label(o.Name) {
			v.errorf(o, "namespace name: %s", msg)
		}
	case *corev1.ConfigMap:
		for k := range obj.Data {
			for _, msg := range validation.IsConfigMapKey(k) {
				v.errorf(o, "data key %q: %s", k, msg)
			}
		}
	case *rbacv1.ClusterRole:
		for i, r := range obj.Rules {
			if len(r.Verbs) == 0 {
				v.errorf(o, "rules[%d]: verbs are required", i)
			}
			if len(r.Resources) == 0 && len(r.NonResourceURLs) == 0 {
				v.errorf(o, "rules[%d]: resources or nonResourceURLs are required", i)
			}
		}
	case *rbacv1.ClusterRoleBinding:
		if obj.RoleRef.APIGroup != rbacv1.GroupName || obj.RoleRef.Kind != "ClusterRole" {
			v.errorf(o, "roleRef: want apiGroup %s kind ClusterRole, got %s %s", rbacv1.GroupName, obj.RoleRef.APIGroup, obj.RoleRef.Kind)
		} else if !v.has("ClusterRole", "", obj.RoleRef.Name) {
			v.errorf(o, "roleRef: ClusterRole %q is not in the manifest", obj.RoleRef.Name)
		}
		for i, s := range obj.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				continue
			}
			if s.Namespace == "" {
				v.errorf(o, "subjects[%d]: a ServiceAccount subject needs a namespace", i)
			} else if !v.has("ServiceAccount", s.Namespace, s.Name) {
				v.errorf(o, "subjects[%d]: ServiceAccount %s/%s is not in the manifest", i, s.Namespace, s.Name)
			}
		}
	case *appsv1.DaemonSet:
		v.daemonSet(o, obj)
	}
}

func (v *validator) labels(o Object, l map[string]string, where string) {
	for k, val := range l {
		for _, msg := range validation.IsQualifiedName(k) {
			v.errorf(o, "%s key %q: %s", where, k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(val) {
			v.errorf(o, "%s[%q] = %q: %s", where, k, val, msg)
		}
	}
}

func (v *validator) daemonSet(o Object, ds *appsv1.DaemonSet) {
	if ds.Spec.Selector == nil || (len(ds.Spec.Selector.MatchLabels) == 0 && len(ds.Spec.Selector.MatchExpressions) == 0) {
		v.errorf(o, "spec.selector is required")
	} else if sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err != nil {
		v.errorf(o, "spec.selector: %v", err)
	} else if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		v.errorf(o, "spec.selector %s does not match the template's labels %v", sel, ds.Spec.Template.Labels)
	}
	v.labels(o, ds.Spec.Template.Labels, "spec.template.metadata.labels")
	if s := ds.Spec.UpdateStrategy; s.Type != "" && s.Type != appsv1.RollingUpdateDaemonSetStrategyType && s.Type != appsv1.OnDeleteDaemonSetStrategyType {
		v.errorf(o, "spec.updateStrategy.type %q", s.Type)
	}
	ps := ds.Spec.Template.Spec
	if sa := ps.ServiceAccountName; sa != "" && !v.has("ServiceAccount", o.Namespace, sa) {
		v.errorf(o, "serviceAccountName %q: no such ServiceAccount in %s", sa, o.Namespace)
	}
	switch ps.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone:
	default:
		v.errorf(o, "dnsPolicy %q", ps.DNSPolicy)
	}
	for i, t := range ps.Tolerations {
		if t.Operator == corev1.TolerationOpExists && t.Value != "" {
			v.errorf(o, "tolerations[%d]: operator Exists takes no value", i)
		}
		if t.Key == "" && t.Operator != corev1.TolerationOpExists {
			v.errorf(o, "tolerations[%d]: an empty key needs operator Exists", i)
		}
	}
	for k := range ps.NodeSelector {
		for _, msg := range validation.IsQualifiedName(k) {
			v.errorf(o, "nodeSelector key %q: %s", k, msg)
		}
	}

	vols := map[string]corev1.Volume{}
	for i, vol := range ps.Volumes {
		for _, msg := range validation.IsDNS1123Label(vol.Name) {
			v.errorf(o, "volumes[%d] name %q: %s", i, vol.Name, msg)
		}
		if _, dup := vols[vol.Name]; dup {
			v.errorf(o, "volumes[%d]: duplicate name %q", i, vol.Name)
		}
		vols[vol.Name] = vol
		if n := sources(vol.VolumeSource); n != 1 {
			v.errorf(o, "volume %q: %d sources, want exactly one", vol.Name, n)
		}
		if hp := vol.HostPath; hp != nil {
			if !path.IsAbs(hp.Path) {
				v.errorf(o, "volume %q: hostPath %q is not absolute", vol.Name, hp.Path)
			}
			if hp.Type != nil {
				switch *hp.Type {
				case corev1.HostPathUnset, corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory, corev1.HostPathFileOrCreate,
					corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
				default:
					v.errorf(o, "volume %q: hostPath type %q", vol.Name, *hp.Type)
				}
			}
		}
		if cm := vol.ConfigMap; cm != nil && (cm.Optional == nil || !*cm.Optional) && !v.has("ConfigMap", o.Namespace, cm.Name) {
			v.errorf(o, "volume %q: ConfigMap %q is not in the manifest", vol.Name, cm.Name)
		}
	}

	if len(ps.Containers) == 0 {
		v.errorf(o, "the pod template has no containers")
	}
	names := map[string]bool{}
	for _, c := range append(append([]corev1.Container(nil), ps.InitContainers...), ps.Containers...) {
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			v.errorf(o, "container name %q: %s", c.Name, msg)
		}
		if names[c.Name] {
			v.errorf(o, "duplicate container name %q", c.Name)
		}
		names[c.Name] = true
		v.container(o, ps, c, vols)
	}
}

// sources counts the volume sources set (the API allows exactly one).
func sources(vs corev1.VolumeSource) int {
	n := 0
	rv := reflect.ValueOf(vs)
	for i := 0; i < rv.NumField(); i++ {
		if f := rv.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			n++
		}
	}
	return n
}

var capName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// fieldPaths the downward API serves to env vars.
var fieldPaths = map[string]bool{"metadata.name": true, "metadata.namespace": true, "metadata.uid": true, "spec.nodeName": true,
	"spec.serviceAccountName": true, "status.hostIP": true, "status.hostIPs": true, "status.podIP": true, "status.podIPs": true}

func (v *validator) container(o Object, ps corev1.PodSpec, c corev1.Container, vols map[string]corev1.Volume) {
	where := "container " + c.Name
	if c.Image == "" {
		v.errorf(o, "%s: image is required", where)
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		v.errorf(o, "%s: imagePullPolicy %q", where, c.ImagePullPolicy)
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			v.errorf(o, "%s: env %q: %s", where, e.Name, msg)
		}
		if env[e.Name] {
			v.errorf(o, "%s: env %q set twice", where, e.Name)
		}
		env[e.Name] = true
		if e.ValueFrom != nil {
			if e.Value != "" {
				v.errorf(o, "%s: env %q has value and valueFrom", where, e.Name)
			}
			if f := e.ValueFrom.FieldRef; f != nil && !fieldPaths[f.FieldPath] {
				v.errorf(o, "%s: env %q: fieldPath %q is not served to env", where, e.Name, f.FieldPath)
			}
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			v.errorf(o, "%s: containerPort %d", where, p.ContainerPort)
		}
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				v.errorf(o, "%s: port name %q: %s", where, p.Name, msg)
			}
			if _, dup := ports[p.Name]; dup {
				v.errorf(o, "%s: duplicate port name %q", where, p.Name)
			}
			ports[p.Name] = p.ContainerPort
		}
		if ps.HostNetwork && p.HostPort != 0 && p.HostPort != p.ContainerPort {
			v.errorf(o, "%s: with hostNetwork hostPort must equal containerPort", where)
		}
	}
	for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p != nil {
			v.probe(o, where+" "+name, p, ports)
		}
	}
	for res, req := range c.Resources.Requests {
		if lim, ok := c.Resources.Limits[res]; ok && req.Cmp(lim) > 0 {
			v.errorf(o, "%s: %s request %s is above its limit %s", where, res, req.String(), lim.String())
		}
	}
	privileged := false
	if sc := c.SecurityContext; sc != nil {
		privileged = sc.Privileged != nil && *sc.Privileged
		if sc.Capabilities != nil {
			for _, cp := range append(append([]corev1.Capability(nil), sc.Capabilities.Add...), sc.Capabilities.Drop...) {
				if !capName.MatchString(string(cp)) || strings.HasPrefix(string(cp), "CAP_") {
					v.errorf(o, "%s: capability %q: want the name without CAP_, upper case", where, cp)
				}
			}
		}
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			if privileged {
				v.errorf(o, "%s: allowPrivilegeEscalation false with privileged", where)
			}
			if sc.Capabilities != nil {
				for _, cp := range sc.Capabilities.Add {
					if cp == "SYS_ADMIN" || cp == "CAP_SYS_ADMIN" {
						v.errorf(o, "%s: allowPrivilegeEscalation false with SYS_ADMIN", where)
					}
				}
			}
		}
		for _, p := range []*corev1.SeccompProfile{sc.SeccompProfile} {
			if p != nil && p.Type == corev1.SeccompProfileTypeLocalhost && (p.LocalhostProfile == nil || *p.LocalhostProfile == "") {
				v.errorf(o, "%s: a Localhost seccomp profile needs localhostProfile", where)
			}
		}
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			v.errorf(o, "%s: volumeMount %q: no such volume", where, m.Name)
		}
		if !path.IsAbs(m.MountPath) || strings.Contains(m.MountPath, ":") {
			v.errorf(o, "%s: mountPath %q", where, m.MountPath)
		}
		if mounts[path.Clean(m.MountPath)] {
			v.errorf(o, "%s: mountPath %q used twice", where, m.MountPath)
		}
		mounts[path.Clean(m.MountPath)] = true
		if m.MountPropagation != nil {
			switch *m.MountPropagation {
			case corev1.MountPropagationNone, corev1.MountPropagationHostToContainer:
			case corev1.MountPropagationBidirectional:
				if !privileged {
					v.errorf(o, "%s: mount %q: Bidirectional propagation is only allowed in privileged containers", where, m.Name)
				}
			default:
				v.errorf(o, "%s: mount %q: propagation %q", where, m.Name, *m.MountPropagation)
			}
		}
	}
}

func (v *validator) probe(o Object, where string, p *corev1.Probe, ports map[string]int32) {
	handlers := 0
	if p.Exec != nil {
		handlers++
	}
	if p.TCPSocket != nil {
		handlers++
		v.port(o, where, p.TCPSocket.Port, ports)
	}
	if p.GRPC != nil {
		handlers++
	}
	if h := p.HTTPGet; h != nil {
		handlers++
		v.port(o, where, h.Port, ports)
		if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
			v.errorf(o, "%s: path %q must start with /", where, h.Path)
		}
		switch h.Scheme {
		case "", corev1.URISchemeHTTP, corev1.URISchemeHTTPS:
		default:
			v.errorf(o, "%s: scheme %q", where, h.Scheme)
		}
	}
	if handlers != 1 {
		v.errorf(o, "%s: %d handlers, want exactly one", where, handlers)
	}
	if p.PeriodSeconds < 0 || p.TimeoutSeconds < 0 || p.FailureThreshold < 0 || p.SuccessThreshold < 0 || p.InitialDelaySeconds < 0 {
		v.errorf(o, "%s: negative timing", where)
	}
	if strings.HasSuffix(where, "livenessProbe") || strings.HasSuffix(where, "startupProbe") {
		if p.SuccessThreshold > 1 {
			v.errorf(o, "%s: successThreshold must be 1", where)
		}
	}
}

func (v *validator) port(o Object, where string, p intstr.IntOrString, ports map[string]int32) {
	if p.Type == intstr.String {
		if _, ok := ports[p.StrVal]; !ok {
			v.errorf(o, "%s: named port %q is not a port of the container", where, p.StrVal)
		}
		return
	}
	if p.IntVal < 1 || p.IntVal > 65535 {
		v.errorf(o, "%s: port %d", where, p.IntVal)
	}
}
