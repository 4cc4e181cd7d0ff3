// Package apply writes a translated configuration (daemon/config's Model)
// into the data-plane maps (daemon/maps), incrementally.
//
// It owns the numbering of services and clusters (map IDs) and writes in the
// order that never lets a connect() see a service naming a missing cluster:
// clusters first, then services, then removals. A changed cluster is
// rewritten in place (slots, then the count), so every slot a connect reads
// is an endpoint of the old or the new table.
//
// Capacity (IDs, endpoint slots) is checked before anything is written: a
// model that does not fit is refused whole (ErrCapacity) and the maps keep
// the current one. When a write fails part way, the next Apply is a full
// one.
//
// A full apply (the first one of an Applier, over entries adopted from a
// previous daemon, and the one after a failed write) reconciles the maps
// with the model from what they hold, without a gap: a cluster the maps
// already hold with the same policy and slot table keeps its ID and is not
// rewritten, the others are written under IDs no live entry uses, each
// service keeps its ID and is switched over in one update (none when its
// entry is already right), and what is left of the old entries is deleted
// afterwards. A restart with an unchanged configuration writes nothing and
// keeps every counter. IDs come back as late as possible: never-used ones
// first, then the longest-released.
package apply
