package probe

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// kconfigChecks turns the kernel options kmesh depends on into checks.
func kconfigChecks(kc *KConfig) []Check {
	type opt struct {
		name, fix string
	}
	opts := []opt{
		{"CONFIG_BPF_SYSCALL", "use a kernel built with CONFIG_BPF_SYSCALL=y"},
		{"CONFIG_CGROUP_BPF", "use a kernel built with CONFIG_CGROUP_BPF=y"},
		{"CONFIG_DEBUG_INFO_BTF", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"},
		{"CONFIG_MODULES", "enhanced mode loads kmesh.ko: use a kernel built with CONFIG_MODULES=y"},
		{"CONFIG_MODULE_UNLOAD", "upgrading kmesh.ko in place needs CONFIG_MODULE_UNLOAD=y"},
		{"CONFIG_NET_SOCK_MSG", ""},
		{"CONFIG_BPF_STREAM_PARSER", ""},
		{"CONFIG_IPV6", ""},
	}
	var checks []Check
	for _, o := range opts {
		name := "kconfig." + strings.ToLower(strings.TrimPrefix(o.name, "CONFIG_"))
		switch {
		case kc == nil:
			checks = append(checks, Check{Name: name, Status: Inconclusive, Detail: "kernel config not readable",
				Err: errors.New("kernel config not readable")})
		case kc.Enabled(o.name):
			checks = append(checks, supported(name, "%s=%s (%s)", o.name, kc.Get(o.name), kc.Source))
		default:
			checks = append(checks, unsupported(name, o.fix, "%s is not set (%s)", o.name, kc.Source))
		}
	}
	return checks
}

// moduleChecks tells whether this host would accept an unsigned kmesh.ko.
func moduleChecks(h Host, kc *KConfig, env *Environment) []Check {
	var checks []Check
	noModules := kc != nil && !kc.Enabled("CONFIG_MODULES")

	// modules_disabled
	const md = "/proc/sys/kernel/modules_disabled"
	switch v, err := h.readTrim(md); {
	case err == nil && v == "0":
		checks = append(checks, supported("module.modules_disabled", "%s = 0", md))
	case err == nil:
		checks = append(checks, unsupported("module.modules_disabled",
			"module loading was switched off until reboot (sysctl kernel.modules_disabled=1); reboot without that setting",
			"%s = %s", md, v))
	case noModules && errors.Is(err, os.ErrNotExist):
		checks = append(checks, unsupported("module.modules_disabled", "", "%s absent: kernel has no module support", md))
	default:
		checks = append(checks, fromErr("module.modules_disabled", fmt.Errorf("read %s: %w", md, err), ""))
	}

	// lockdown: integrity and confidentiality refuse unsigned modules
	checks = append(checks, lockdownCheck(h))

	// signature enforcement
	const se = "/sys/module/module/parameters/sig_enforce"
	switch v, err := h.readTrim(se); {
	case kc != nil && kc.Enabled("CONFIG_MODULE_SIG_FORCE"):
		checks = append(checks, unsupported("module.sig_enforce",
			"the kernel only loads signed modules (CONFIG_MODULE_SIG_FORCE=y); kmesh.ko built on the node is unsigned: use compat mode or sign kmesh.ko with a key the kernel trusts",
			"CONFIG_MODULE_SIG_FORCE=y (%s)", kc.Source))
	case err == nil && v == "Y":
		checks = append(checks, unsupported("module.sig_enforce",
			"boot without module.sig_enforce=1, or sign kmesh.ko with a key the kernel trusts", "%s = Y", se))
	case err == nil:
		checks = append(checks, supported("module.sig_enforce", "%s = %s", se, v))
	case noModules:
		checks = append(checks, unsupported("module.sig_enforce", "", "kernel has no module support"))
	case kc != nil && errors.Is(err, os.ErrNotExist):
		checks = append(checks, supported("module.sig_enforce", "not enforced (%s absent, CONFIG_MODULE_SIG_FORCE not set)", se))
	default:
		checks = append(checks, fromErr("module.sig_enforce", fmt.Errorf("read %s: %w", se, err), ""))
	}

	// CAP_SYS_MODULE of this process
	if slices.Contains(env.Capabilities, "CAP_SYS_MODULE") {
		checks = append(checks, supported("module.cap_sys_module", "effective"))
	} else {
		checks = append(checks, Check{Name: "module.cap_sys_module", Status: NotPermitted,
			Detail: "CAP_SYS_MODULE not effective", Fix: "add SYS_MODULE to the container's capabilities"})
	}
	return checks
}

var lockdownRe = regexp.MustCompile(`\[(\w+)\]`)

func lockdownCheck(h Host) Check {
	const name, lf = "module.lockdown", "/sys/kernel/security/lockdown"
	b, err := h.ReadFile(lf)
	if errors.Is(err, os.ErrNotExist) && h.IsRealRoot() {
		// securityfs may simply not be mounted: look through a private mount.
		dir, cleanup, mErr := tempMount("securityfs", "kmesh-probe-sec-")
		if mErr == nil {
			defer cleanup()
			b, err = os.ReadFile(dir + "/lockdown")
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return supported(name, "no lockdown LSM (%s absent)", lf)
	}
	if err != nil {
		return fromErr(name, fmt.Errorf("read %s: %w", lf, err), "")
	}
	m := lockdownRe.FindStringSubmatch(string(b))
	if m == nil {
		return inconclusive(name, fmt.Errorf("parse %s: %q", lf, strings.TrimSpace(string(b))))
	}
	if m[1] == "none" {
		return supported(name, "lockdown=none")
	}
	return unsupported(name,
		"kernel lockdown refuses unsigned modules: boot with lockdown=none (or Secure Boot off), or sign kmesh.ko with a key the kernel trusts",
		"lockdown=%s", m[1])
}
