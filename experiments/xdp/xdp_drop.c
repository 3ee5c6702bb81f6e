/* xdp_drop: drop UDP datagrams to one port at the driver, count them per CPU.
 *
 * Built at run time by receiver.sh (provision.builds only runs gcc):
 *   clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -DDROP_PORT=18502 \
 *         -c xdp_drop.c -o xdp_drop.o
 * and attached with `ip link set dev IF xdpdrv obj xdp_drop.o sec xdp`.
 *
 * Only IPv4 and IPv6 UDP with destination port DROP_PORT is dropped; everything
 * else (ARP, SSH, ICMP, other ports, VLAN-tagged frames, IPv6 with extension
 * headers, IPv4 fragments after the first) passes untouched, so the host stays
 * reachable while the program is attached. `counters` (a per-CPU array of one
 * entry) holds how many frames were dropped and their bytes, for result.py.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef DROP_PORT
#error "compile with -DDROP_PORT=<udp port>"
#endif

struct drop_count {
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct drop_count);
} counters SEC(".maps");

/* The UDP header after an IP header of `ip_len` bytes at `l3`, or NULL. */
static __always_inline struct udphdr *udp_after(void *l3, __u32 ip_len, void *end) {
    struct udphdr *udp = l3 + ip_len;
    if ((void *)(udp + 1) > end)
        return 0;
    return udp;
}

SEC("xdp")
int xdp_drop_port(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct udphdr *udp = 0;

    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
            return XDP_PASS;
        if (ip->frag_off & bpf_htons(0x1fff)) /* a later fragment has no UDP header */
            return XDP_PASS;
        udp = udp_after(ip, ip->ihl * 4, end);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
            return XDP_PASS;
        udp = udp_after(ip6, sizeof(*ip6), end);
    }
    if (!udp || udp->dest != bpf_htons(DROP_PORT))
        return XDP_PASS;

    __u32 key = 0;
    struct drop_count *count = bpf_map_lookup_elem(&counters, &key);
    if (count) { /* per-CPU: no other CPU writes this slot, no atomics needed */
        count->packets += 1;
        count->bytes += end - data;
    }
    return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
