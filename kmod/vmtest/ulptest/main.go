package main

import (
	"flag"
	"os"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.module, "module", "kmesh", "module name (for /proc/modules and rmmod)")
	flag.StringVar(&cfg.wantVersion, "version", "", "expected /sys/module/<module>/version (empty: any)")
	flag.BoolVar(&cfg.rmmod, "rmmod", true, "finish with the unload checks (the module is gone afterwards)")
	flag.Parse()
	os.Exit(run(cfg, os.Stdout))
}
