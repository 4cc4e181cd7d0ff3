// Package apply writes a translated configuration (daemon/config's Model)
// into the data-plane maps (daemon/maps), incrementally.
//
// It owns the numbering of services and clusters (map IDs) and writes in the
// order that never lets a connect() see a service naming a missing cluster:
// clusters first, then services, then removals. The first Apply after a
// restart replaces whatever the adopted maps hold without a gap: the new
// entries get IDs the old ones do not use, each service entry is switched
// over in one update, and the old entries are deleted afterwards.
package apply
