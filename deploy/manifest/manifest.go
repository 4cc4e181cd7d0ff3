package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Object is one decoded document.
type Object struct {
	Kind, Namespace, Name string
	// Source names the file (and document index) it came from.
	Source string
	// Obj is the typed object: *corev1.Namespace, *appsv1.DaemonSet, ...
	Obj any
}

// Key identifies an object within a set.
func (o Object) Key() string { return o.Kind + "/" + o.Namespace + "/" + o.Name }

// ErrDecode marks a document that is not a valid object of a known kind.
var ErrDecode = errors.New("invalid manifest document")

// kinds are the types kmesh's manifests use, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/Namespace":      func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount": func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":      func() any { return &corev1.ConfigMap{} },
	"apps/v1/DaemonSet": func() any { return &appsv1.DaemonSet{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
}

// Load reads and decodes a manifest file.
func Load(path string) ([]Object, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return Decode(b, path)
}

// Decode splits a YAML stream into documents and decodes each strictly into
// its typed object. Documents that are empty or only comments are skipped.
func Decode(data []byte, source string) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: split documents: %w", source, err)
		}
		src := fmt.Sprintf("%s#%d", source, i)
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", src, ErrDecode, err)
		}
		if tm.APIVersion == "" && tm.Kind == "" {
			var any map[string]any
			if err := yaml.Unmarshal(doc, &any); err == nil && len(any) == 0 {
				continue // empty or comments only
			}
			return nil, fmt.Errorf("%s: %w: no apiVersion and kind", src, ErrDecode)
		}
		newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s: %w: unknown kind %s %s", src, ErrDecode, tm.APIVersion, tm.Kind)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s (%s): %w: %v", src, tm.Kind, ErrDecode, err)
		}
		meta := objectMeta(obj)
		out = append(out, Object{Kind: tm.Kind, Namespace: meta.Namespace, Name: meta.Name, Source: src, Obj: obj})
	}
	return out, nil
}

func objectMeta(obj any) *metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return &o.ObjectMeta
	case *corev1.ServiceAccount:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *appsv1.DaemonSet:
		return &o.ObjectMeta
	case *rbacv1.ClusterRole:
		return &o.ObjectMeta
	case *rbacv1.ClusterRoleBinding:
		return &o.ObjectMeta
	}
	panic(fmt.Sprintf("manifest: no metadata for %T", obj))
}

// Find returns the object of kind and name (any namespace), or nil.
func Find(objs []Object, kind, name string) *Object {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Name == name {
			return &objs[i]
		}
	}
	return nil
}

// DaemonSet returns the set's only DaemonSet.
func DaemonSet(objs []Object) (*appsv1.DaemonSet, error) {
	var ds *appsv1.DaemonSet
	for _, o := range objs {
		if d, ok := o.Obj.(*appsv1.DaemonSet); ok {
			if ds != nil {
				return nil, fmt.Errorf("find the DaemonSet: more than one")
			}
			ds = d
		}
	}
	if ds == nil {
		return nil, fmt.Errorf("find the DaemonSet: none")
	}
	return ds, nil
}

// Equal compares two sets of objects semantically. It returns "" when they
// hold the same objects with the same fields, else a description of every
// difference.
func Equal(want, got []Object) string {
	index := func(objs []Object) (map[string]Object, []string) {
		m := map[string]Object{}
		var dup []string
		for _, o := range objs {
			if _, ok := m[o.Key()]; ok {
				dup = append(dup, o.Key())
			}
			m[o.Key()] = o
		}
		return m, dup
	}
	w, wd := index(want)
	g, gd := index(got)
	var diffs []string
	for _, k := range wd {
		diffs = append(diffs, "duplicate in the first set: "+k)
	}
	for _, k := range gd {
		diffs = append(diffs, "duplicate in the second set: "+k)
	}
	keys := map[string]bool{}
	for k := range w {
		keys[k] = true
	}
	for k := range g {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		a, inA := w[k]
		b, inB := g[k]
		switch {
		case !inA:
			diffs = append(diffs, fmt.Sprintf("%s: only in the second set (%s)", k, b.Source))
		case !inB:
			diffs = append(diffs, fmt.Sprintf("%s: only in the first set (%s)", k, a.Source))
		case !equality.Semantic.DeepEqual(a.Obj, b.Obj):
			diffs = append(diffs, fmt.Sprintf("%s differs (%s vs %s):\n%s", k, a.Source, b.Source, lineDiff(toYAML(a.Obj), toYAML(b.Obj))))
		}
	}
	return strings.Join(diffs, "\n")
}

func toYAML(obj any) string {
	b, err := yaml.Marshal(obj)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// lineDiff lists the lines only in a ("-") and only in b ("+"), in order:
// enough to see which field differs without a diff library.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	// longest common subsequence, small inputs
	n, m := len(al), len(bl)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && al[i] == bl[j]:
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+ "+bl[j])
			j++
		default:
			out = append(out, "- "+al[i])
			i++
		}
	}
	return strings.Join(out, "\n")
}

// RepoRoot finds the repository root (the directory holding go.mod) from
// the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find the repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}
