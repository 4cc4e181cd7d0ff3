// Package builder turns a decision record into artefacts built for this host:
// the generated feature header, the BPF objects (clang) and kmesh.ko (kbuild),
// each verified before it is accepted and kept in a content-addressed cache.
//
// It reads the record produced by package probe and never calls back into the
// prober: the record is its whole input about the host.
package builder
