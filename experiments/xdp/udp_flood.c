/* udp_flood: send small UDP datagrams as fast as one thread can, with sendmmsg().
 *
 * usage: udp_flood HOST PORT [--seconds S] [--packets N] [--payload BYTES] [--batch N]
 *
 * Sends from one connected socket (one flow: one source port, so one receive
 * queue) until S seconds have passed (default 5) or N packets went out (default:
 * no limit), whichever comes first; at most 10^10 packets and 3600 s. Each
 * datagram carries BYTES of payload (default 64) starting with a sequence number.
 *
 * Prints one json_values line for its own send rate,
 *   {"value": seconds_per_packet_sent, "units": packets_sent, "errors": send_errors}
 * and {"client_cpu_seconds": C}. A send that fails with ECONNREFUSED (an ICMP
 * port unreachable came back: nothing listened and nothing dropped the packet),
 * ENOBUFS or EAGAIN counts as an error and sending goes on; any other error ends
 * the program with status 1. A summary goes to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define MAX_PAYLOAD 1472 /* one Ethernet frame at MTU 1500 */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static int usage(const char *problem) {
    if (problem)
        fprintf(stderr, "udp_flood: %s\n", problem);
    fprintf(stderr, "usage: udp_flood HOST PORT [--seconds S] [--packets N] [--payload BYTES] [--batch N]\n");
    return 2;
}

/* A number from `text` within [low, high], or -1 with a message. */
static double number(const char *flag, const char *text, double low, double high) {
    char *rest;
    errno = 0;
    double value = strtod(text, &rest);
    if (errno || rest == text || *rest || !(value >= low && value <= high)) {
        fprintf(stderr, "udp_flood: %s %s: give a number from %g to %g\n", flag, text, low, high);
        return -1;
    }
    return value;
}

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *found;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "udp_flood: %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
        fprintf(stderr, "udp_flood: connect %s:%s: %s\n", host, port, strerror(errno));
        freeaddrinfo(found);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    freeaddrinfo(found);
    return fd;
}

static char payloads[MAX_BATCH][MAX_PAYLOAD];

int main(int argc, char **argv) {
    if (argc < 3)
        return usage(NULL);
    double seconds = 5, packet_limit = 1e10, payload = 64, batch = 64;
    for (int i = 3; i < argc; i += 2) {
        if (i + 1 >= argc)
            return usage("a flag needs a value");
        double *target = !strcmp(argv[i], "--seconds") ? &seconds
                       : !strcmp(argv[i], "--packets") ? &packet_limit
                       : !strcmp(argv[i], "--payload") ? &payload
                       : !strcmp(argv[i], "--batch")   ? &batch : NULL;
        if (!target) {
            fprintf(stderr, "udp_flood: unknown flag %s\n", argv[i]);
            return usage(NULL);
        }
        double low = target == &seconds ? 0.001 : target == &payload ? 8 : 1;
        double high = target == &seconds ? 3600 : target == &packet_limit ? 1e10
                    : target == &payload ? MAX_PAYLOAD : MAX_BATCH;
        if ((*target = number(argv[i], argv[i + 1], low, high)) < 0)
            return 2;
    }
    int fd = connect_to(argv[1], argv[2]);
    if (fd < 0)
        return 1;

    struct mmsghdr messages[MAX_BATCH];
    struct iovec vectors[MAX_BATCH];
    memset(messages, 0, sizeof messages);
    for (int i = 0; i < (int)batch; i++) {
        memset(payloads[i], 0xa5, (size_t)payload);
        vectors[i] = (struct iovec){.iov_base = payloads[i], .iov_len = (size_t)payload};
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }

    uint64_t limit = (uint64_t)packet_limit, sent = 0, errors = 0, calls = 0;
    double cpu_start = cpu_seconds(), start = now(), deadline = start + seconds, elapsed;
    while (sent < limit) {
        int count = (int)batch;
        if (limit - sent < (uint64_t)count)
            count = (int)(limit - sent);
        for (int i = 0; i < count; i++)
            memcpy(payloads[i], &(uint64_t){sent + i}, sizeof(uint64_t));
        int done = sendmmsg(fd, messages, count, 0);
        calls++;
        if (done > 0) {
            sent += done;
        } else if (errno == ECONNREFUSED || errno == ENOBUFS || errno == EAGAIN) {
            errors++;
        } else if (errno != EINTR) {
            fprintf(stderr, "udp_flood: sendmmsg: %s\n", strerror(errno));
            return 1;
        }
        if (now() >= deadline)
            break;
    }
    elapsed = now() - start;
    double cpu = cpu_seconds() - cpu_start;
    close(fd);
    if (sent == 0) {
        fprintf(stderr, "udp_flood: no packet was sent in %.3f s (%llu errors)\n", elapsed,
                (unsigned long long)errors);
        return 1;
    }
    printf("{\"value\": %.9e, \"units\": %llu, \"errors\": %llu}\n", elapsed / sent, (unsigned long long)sent,
           (unsigned long long)errors);
    printf("{\"client_cpu_seconds\": %.6f}\n", cpu);
    fprintf(stderr, "udp_flood: %llu packets of %d bytes payload in %.3f s: %.3f Mpps sent, %llu sendmmsg calls, "
            "%llu errors, %.3f CPU s\n", (unsigned long long)sent, (int)payload, elapsed, sent / elapsed / 1e6,
            (unsigned long long)calls, (unsigned long long)errors, cpu);
    return 0;
}
