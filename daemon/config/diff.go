package config

import "slices"

// Delta lists the entries that differ between two models, each slice in
// ServiceKey.Compare or name order. Values are looked up in the new model
// (added, changed) or the old one (removed).
//
// To apply a delta without a window in which a service names a missing
// cluster: write ClustersAdded and ClustersChanged, then ServicesAdded and
// ServicesChanged, then delete ServicesRemoved, then ClustersRemoved.
type Delta struct {
	ServicesAdded, ServicesChanged, ServicesRemoved []ServiceKey
	ClustersAdded, ClustersChanged, ClustersRemoved []string
}

// Empty reports whether the delta has no entries.
func (d Delta) Empty() bool {
	return len(d.ServicesAdded)+len(d.ServicesChanged)+len(d.ServicesRemoved)+
		len(d.ClustersAdded)+len(d.ClustersChanged)+len(d.ClustersRemoved) == 0
}

// Diff returns what changes from old to new. A nil model is empty. Models
// are canonical (endpoints and weighted clusters sorted, duplicates merged),
// so reordering the input alone yields an empty delta.
func Diff(old, new *Model) Delta {
	var d Delta
	var oldS, newS map[ServiceKey]Service
	var oldC, newC map[string]Cluster
	if old != nil {
		oldS, oldC = old.Services, old.Clusters
	}
	if new != nil {
		newS, newC = new.Services, new.Clusters
	}
	for k, n := range newS {
		o, had := oldS[k]
		switch {
		case !had:
			d.ServicesAdded = append(d.ServicesAdded, k)
		case !o.Equal(n):
			d.ServicesChanged = append(d.ServicesChanged, k)
		}
	}
	for k := range oldS {
		if _, has := newS[k]; !has {
			d.ServicesRemoved = append(d.ServicesRemoved, k)
		}
	}
	for name, n := range newC {
		o, had := oldC[name]
		switch {
		case !had:
			d.ClustersAdded = append(d.ClustersAdded, name)
		case !o.Equal(n):
			d.ClustersChanged = append(d.ClustersChanged, name)
		}
	}
	for name := range oldC {
		if _, has := newC[name]; !has {
			d.ClustersRemoved = append(d.ClustersRemoved, name)
		}
	}
	for _, s := range [][]ServiceKey{d.ServicesAdded, d.ServicesChanged, d.ServicesRemoved} {
		slices.SortFunc(s, ServiceKey.Compare)
	}
	for _, s := range [][]string{d.ClustersAdded, d.ClustersChanged, d.ClustersRemoved} {
		slices.Sort(s)
	}
	return d
}
