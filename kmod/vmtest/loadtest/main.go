package main

import (
	"flag"
	"os"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.a, "a", "/kmesh/kmesh.ko", "kmesh.ko built for this kernel")
	flag.StringVar(&cfg.b, "b", "/kmesh/kmesh-b.ko", "the same module built with a different srcversion")
	flag.StringVar(&cfg.foreign, "foreign", "/kmesh/kmesh-foreign.ko", "kmesh.ko built for another kernel")
	flag.Parse()
	os.Exit(run(cfg, os.Stdout))
}
