// A minimal object for the loader tests of map-attached programs: a
// sockops program (cgroup) and an sk_msg program, which the loader attaches
// to the object's one sockhash. Neither acts on any socket.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} test_socks SEC(".maps");

SEC("sockops")
int test_sockops(struct bpf_sock_ops *skops)
{
	return 1;
}

SEC("sk_msg")
int test_verdict(struct sk_msg_md *msg)
{
	return SK_PASS;
}
