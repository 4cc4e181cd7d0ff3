// A minimal object for the loader tests: a cgroup/connect4 program that
// counts calls from one network namespace (set in a map) and allows all.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} test_counter SEC(".maps");

SEC("cgroup/connect4")
int count_connect4(struct bpf_sock_addr *ctx)
{
	__u32 k = 0;
	__u64 *want = bpf_map_lookup_elem(&test_counter, &k);
	if (!want || *want != bpf_get_netns_cookie(ctx))
		return 1;
	k = 1;
	__u64 *n = bpf_map_lookup_elem(&test_counter, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
