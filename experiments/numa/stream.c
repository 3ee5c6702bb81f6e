/* stream: a STREAM-style triad, a[i] = b[i] + s * c[i], over three arrays of doubles,
 * to measure the memory bandwidth the calling process gets where it runs.
 *
 * usage: stream [--array-mib N] [--repeats R] [--threads T|all]
 *
 * Placement is left to whoever starts it (`numactl --cpunodebind=X --membind=Y stream ...`):
 * the arrays are allocated and first touched here, after that binding is in force, each
 * thread touching the slice it later works on. `--threads all` starts one thread per CPU
 * the process may run on.
 *
 * Byte accounting is STREAM's: a triad over N elements moves 3 * 8 * N bytes (two arrays
 * read, one written); the extra read that a write-allocate cache does for `a` is not counted.
 *
 * Output, one JSON line per repeat (the json_values parser):
 *   {"value": seconds per GiB moved, "units": GiB moved in that repeat, rounded}
 * then {"client_cpu_seconds": C} (user + system, all threads, including the first touch).
 * stderr gets one summary line: sizes, threads, CPUs allowed, the memory policy and the NUMA
 * node that sampled pages of each array actually sit on, so a raw log shows where it ran.
 * Exits 2 on bad usage, 1 when memory cannot be had or the result is wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/mempolicy.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SCALAR 3.0
#define B_VALUE 1.0
#define C_VALUE 2.0
#define MAX_THREADS 1024
#define MAX_NODES 1024

struct shared {
    double *a, *b, *c;
    size_t elements;
    int threads, repeats;
    pthread_barrier_t barrier;
    double *seconds;  /* one per repeat, written by thread 0 */
};

struct worker {
    struct shared *shared;
    int id;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void slice(const struct shared *s, int id, size_t *first, size_t *end) {
    size_t per = s->elements / s->threads, extra = s->elements % s->threads;
    *first = id * per + (id < (int)extra ? (size_t)id : extra);
    *end = *first + per + (id < (int)extra);
}

static void *work(void *arg) {
    struct worker *w = arg;
    struct shared *s = w->shared;
    size_t first, end;
    slice(s, w->id, &first, &end);
    double *restrict a = s->a, *restrict b = s->b, *restrict c = s->c;
    /* First touch: the pages of this slice are placed by the policy in force now. */
    for (size_t i = first; i < end; i++) {
        a[i] = 0.0;
        b[i] = B_VALUE;
        c[i] = C_VALUE;
    }
    pthread_barrier_wait(&s->barrier);
    double started = now();
    for (int r = 0; r < s->repeats; r++) {
        for (size_t i = first; i < end; i++)
            a[i] = b[i] + SCALAR * c[i];
        /* The stores of every repeat must happen: no merging of repeats across the barrier. */
        __asm__ volatile("" ::: "memory");
        pthread_barrier_wait(&s->barrier);
        if (w->id == 0) {
            double finished = now();
            s->seconds[r] = finished - started;
            started = finished;
        }
    }
    return NULL;
}

static int parse_count(const char *flag, const char *text, long low, long high, long *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || *end || end == text || value < low || value > high) {
        fprintf(stderr, "stream: %s %s: give a whole number from %ld to %ld\n", flag, text, low, high);
        return -1;
    }
    *out = value;
    return 0;
}

static const char *policy_name(int mode) {
    switch (mode & ~(MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES)) {
    case MPOL_DEFAULT: return "default";
    case MPOL_PREFERRED: return "preferred";
    case MPOL_BIND: return "bind";
    case MPOL_INTERLEAVE: return "interleave";
    case MPOL_LOCAL: return "local";
    default: return "other";
    }
}

/* The process's memory policy and its nodes, e.g. "bind 0" (the kernel's view, not numactl's). */
static void describe_policy(char *out, size_t size) {
    int mode = 0;
    unsigned long mask[MAX_NODES / (8 * sizeof(unsigned long))] = {0};
    if (syscall(SYS_get_mempolicy, &mode, mask, (unsigned long)MAX_NODES, NULL, 0UL) != 0) {
        snprintf(out, size, "unknown (%s)", strerror(errno));
        return;
    }
    int used = snprintf(out, size, "%s", policy_name(mode));
    const size_t bits = 8 * sizeof(unsigned long);
    for (int node = 0; node < MAX_NODES && (size_t)used < size; node++)
        if ((mode & ~(MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES)) != MPOL_DEFAULT
            && mask[node / bits] >> (node % bits) & 1UL)
            used += snprintf(out + used, size - used, " %d", node);
}

/* The NUMA node holding the page at `address`, or -1 when the kernel will not say. */
static int node_of(const void *address) {
    int node = -1;
    if (syscall(SYS_get_mempolicy, &node, NULL, 0UL, address, (unsigned long)(MPOL_F_NODE | MPOL_F_ADDR)) != 0)
        return -1;
    return node;
}

/* Nodes of the first, middle and last page of an array, e.g. "0,0,0". */
static void describe_nodes(const double *array, size_t elements, char *out, size_t size) {
    const double *samples[3] = {array, array + elements / 2, array + elements - 1};
    snprintf(out, size, "%d,%d,%d", node_of(samples[0]), node_of(samples[1]), node_of(samples[2]));
}

static double *allocate(size_t bytes) {
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

int main(int argc, char **argv) {
    long array_mib = 256, repeats = 10, threads = 1;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        fprintf(stderr, "stream: sched_getaffinity: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "usage: stream [--array-mib N] [--repeats R] [--threads T|all]\n");
            return 2;
        }
        const char *value = argv[++i];
        int bad;
        if (strcmp(flag, "--array-mib") == 0)
            bad = parse_count(flag, value, 1, 1L << 20, &array_mib);
        else if (strcmp(flag, "--repeats") == 0)
            bad = parse_count(flag, value, 1, 100000, &repeats);
        else if (strcmp(flag, "--threads") == 0 && strcmp(value, "all") == 0)
            bad = (threads = CPU_COUNT(&allowed)) < 1;
        else if (strcmp(flag, "--threads") == 0)
            bad = parse_count(flag, value, 1, MAX_THREADS, &threads);
        else {
            fprintf(stderr, "stream: unknown flag %s\nusage: stream [--array-mib N] [--repeats R] [--threads T|all]\n",
                    flag);
            return 2;
        }
        if (bad) return 2;
    }

    struct shared s = {.threads = (int)threads, .repeats = (int)repeats};
    size_t bytes = (size_t)array_mib << 20;
    s.elements = bytes / sizeof(double);
    s.a = allocate(bytes);
    s.b = allocate(bytes);
    s.c = allocate(bytes);
    s.seconds = calloc(repeats, sizeof *s.seconds);
    if (!s.a || !s.b || !s.c || !s.seconds) {
        fprintf(stderr, "stream: cannot allocate 3 arrays of %ld MiB: %s\n", array_mib, strerror(errno));
        return 1;
    }
    if (pthread_barrier_init(&s.barrier, NULL, s.threads) != 0) {
        fprintf(stderr, "stream: pthread_barrier_init failed\n");
        return 1;
    }

    struct worker workers[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    for (int t = 0; t < s.threads; t++) {
        workers[t] = (struct worker){.shared = &s, .id = t};
        if (t > 0 && (errno = pthread_create(&ids[t], NULL, work, &workers[t])) != 0) {
            fprintf(stderr, "stream: pthread_create: %s\n", strerror(errno));
            return 1;
        }
    }
    work(&workers[0]);
    for (int t = 1; t < s.threads; t++)
        pthread_join(ids[t], NULL);

    /* Every element must hold the triad's result, or the timings measured something else. */
    const double expected = B_VALUE + SCALAR * C_VALUE;
    for (size_t i = 0; i < s.elements; i++) {
        if (s.a[i] != expected) {
            fprintf(stderr, "stream: wrong result: a[%zu] = %g, expected %g\n", i, s.a[i], expected);
            return 1;
        }
    }

    const double gib = 3.0 * sizeof(double) * (double)s.elements / (double)(1 << 30);
    double best = 0.0;
    for (int r = 0; r < s.repeats; r++) {
        if (!(s.seconds[r] > 0)) {
            fprintf(stderr, "stream: repeat %d took no measurable time\n", r + 1);
            return 1;
        }
        printf("{\"value\": %.9g, \"units\": %lld}\n", s.seconds[r] / gib, (long long)(gib + 0.5));
        if (gib / s.seconds[r] > best) best = gib / s.seconds[r];
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("{\"client_cpu_seconds\": %.6f}\n",
           usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6);

    char policy[256], nodes_a[64], nodes_b[64], nodes_c[64], cpus[256];
    describe_policy(policy, sizeof policy);
    describe_nodes(s.a, s.elements, nodes_a, sizeof nodes_a);
    describe_nodes(s.b, s.elements, nodes_b, sizeof nodes_b);
    describe_nodes(s.c, s.elements, nodes_c, sizeof nodes_c);
    int used = 0;
    cpus[0] = '\0';
    for (int cpu = 0; cpu < CPU_SETSIZE && used < (int)sizeof cpus - 8; cpu++)
        if (CPU_ISSET(cpu, &allowed)) used += snprintf(cpus + used, sizeof cpus - used, "%s%d", used ? "," : "", cpu);
    fprintf(stderr,
            "stream: 3 arrays x %ld MiB, %.3f GiB moved per repeat (STREAM triad accounting), %d thread(s), "
            "%ld repeat(s), best %.2f GiB/s; CPUs allowed %s; memory policy %s; "
            "nodes of first,middle,last page: a %s, b %s, c %s\n",
            array_mib, gib, s.threads, repeats, best, cpus, policy, nodes_a, nodes_b, nodes_c);
    return 0;
}
