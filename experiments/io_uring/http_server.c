/*
 * Minimal HTTP/1.1 keep-alive server with three I/O back ends from one source:
 *   --backend epoll         level-triggered epoll, non-blocking sockets, recv/send
 *   --backend uring         io_uring (liburing): multishot accept, one recv or
 *                           send SQE in flight per connection
 *   --backend uring-mshot   io_uring as above, but one multishot recv per
 *                           connection into a ring of provided buffers, so a
 *                           request costs a send SQE and no recv SQE
 * Everything except the event mechanism is shared (parsing, response, state),
 * so a throughput difference between them is the difference of the I/O
 * interface alone. Single-threaded; the harness pins it to one CPU.
 *
 * Usage: http_server --backend epoll|uring|uring-mshot [--bind ADDR] [--port P] [--size BYTES]
 *
 * A request is everything up to "\r\n\r\n" (request bodies are not supported:
 * the load generators send GET). Pipelined requests are answered in order;
 * a partial request waits for more bytes. "Connection: close" or HTTP/1.0
 * closes the connection after the response. SIGTERM/SIGINT end the server
 * cleanly (exit status 0) and print the number of requests served on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_BUF 8192     /* a request header larger than this closes the connection */
#define MAX_FDS 65536
#define RING_ENTRIES 4096
#define MAX_EVENTS 512

struct conn {
    int fd;
    size_t in_len;          /* bytes buffered, not yet parsed into requests */
    unsigned long owed;     /* complete requests whose responses are not fully sent */
    size_t out_off;         /* bytes of the current response already sent */
    int close_after;        /* close once everything owed is sent */
    int writing;            /* epoll: waiting for EPOLLOUT */
    int recv_armed;         /* uring-mshot: the multishot recv is still active */
    int send_inflight;      /* uring-mshot: a send SQE is in flight */
    int closing;            /* uring-mshot: close once nothing is in flight */
    char in[IN_BUF];
};

static struct conn *conns[MAX_FDS];
static char *response;
static size_t response_len;
static unsigned long long served;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void build_response(size_t body)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nServer: bench\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Content-Length: %zu\r\nConnection: keep-alive\r\n\r\n", body);
    response_len = (size_t)n + body;
    response = malloc(response_len);
    if (!response)
        die("malloc");
    memcpy(response, head, (size_t)n);
    memset(response + n, 'x', body);
}

static int open_listener(const char *addr, int port, int nonblock)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad --bind address: %s\n", addr);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static struct conn *conn_new(int fd)
{
    if (fd >= MAX_FDS) {
        close(fd);
        return NULL;
    }
    int one = 1;
    /* Each response is one send; without NODELAY Nagle could hold the next one. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = conns[fd];
    if (!c) {
        c = malloc(sizeof *c);
        if (!c)
            die("malloc");
        conns[fd] = c;
    }
    c->fd = fd;
    c->in_len = 0;
    c->owed = 0;
    c->out_off = 0;
    c->close_after = 0;
    c->writing = 0;
    c->recv_armed = 0;
    c->send_inflight = 0;
    c->closing = 0;
    return c;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    c->fd = -1;
}

/* Does a header line in [p, p+n) start with `name` (case-insensitive)? */
static int has_header_line(const char *p, size_t n, const char *name)
{
    size_t k = strlen(name);
    const char *end = p + n, *nl;
    while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p = nl + 1;
        if ((size_t)(end - p) >= k && strncasecmp(p, name, k) == 0)
            return 1;
    }
    return 0;
}

/*
 * Count the complete requests in the input buffer and keep the partial tail.
 * Returns -1 when the buffer is full without a complete header (too large).
 */
static int parse_requests(struct conn *c)
{
    size_t pos = 0;
    for (;;) {
        char *end = memmem(c->in + pos, c->in_len - pos, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t hdr_len = (size_t)(end - (c->in + pos)) + 4;
        char *line_end = memchr(c->in + pos, '\n', hdr_len);
        if (has_header_line(c->in + pos, hdr_len, "connection: close") ||
            (line_end && line_end - (c->in + pos) >= 9 &&
             memcmp(line_end - 9, "HTTP/1.0", 8) == 0))
            c->close_after = 1;
        c->owed++;
        pos += hdr_len;
        if (c->close_after)
            break;  /* anything after a closing request is ignored */
    }
    if (c->close_after) {
        c->in_len = 0;
    } else if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    if (c->owed == 0 && c->in_len == IN_BUF)
        return -1;
    return 0;
}

/* Account for `n` bytes sent; returns 1 when everything owed has been sent. */
static int advance_send(struct conn *c, size_t n)
{
    c->out_off += n;
    if (c->out_off == response_len) {
        c->out_off = 0;
        c->owed--;
        served++;
    }
    return c->owed == 0;
}

static int make_signalfd(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    /* Blocked and read from an fd, so shutdown cannot race with a blocking wait. */
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
        die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");
    return sfd;
}

/* ---------------------------------------------------------------- epoll */

static void ep_set(int ep, struct conn *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.fd = c->fd};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0)
        die("epoll_ctl");
}

/* Send what is owed; returns -1 if the connection was closed. */
static int ep_flush(int ep, struct conn *c)
{
    while (c->owed > 0) {
        ssize_t n = send(c->fd, response + c->out_off, response_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->writing) {
                    c->writing = 1;
                    ep_set(ep, c, EPOLLOUT, EPOLL_CTL_MOD);
                }
                return 0;
            }
            conn_close(c);
            return -1;
        }
        advance_send(c, (size_t)n);
    }
    if (c->close_after) {
        conn_close(c);
        return -1;
    }
    if (c->writing) {
        c->writing = 0;
        ep_set(ep, c, EPOLLIN, EPOLL_CTL_MOD);
    }
    return 0;
}

static void ep_readable(int ep, struct conn *c)
{
    /* Level-triggered: one recv per wake-up; unread bytes wake us again. */
    ssize_t n = recv(c->fd, c->in + c->in_len, IN_BUF - c->in_len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        conn_close(c);
        return;
    }
    if (n < 0)
        return;
    c->in_len += (size_t)n;
    if (parse_requests(c) < 0) {
        conn_close(c);
        return;
    }
    ep_flush(ep, c);
}

static void run_epoll(int lfd, int sfd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll_ctl listener");
    ev.data.fd = sfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0)
        die("epoll_ctl signalfd");

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == sfd)
                goto out;
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break;  /* EAGAIN, or a transient error: retry on next wake-up */
                    struct conn *c = conn_new(cfd);
                    if (c)
                        ep_set(ep, c, EPOLLIN, EPOLL_CTL_ADD);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (!c || c->fd < 0)
                continue;
            if (c->writing)
                ep_flush(ep, c);
            else
                ep_readable(ep, c);
        }
    }
out:
    close(ep);
}

/* ---------------------------------------------------------------- io_uring */

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SIGNAL };

static uint64_t tag(int fd, int op)
{
    return ((uint64_t)(uint32_t)fd << 8) | (uint64_t)op;
}

static struct io_uring_sqe *get_sqe(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        /* SQ full: push what is queued to the kernel and try again. */
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
        if (!sqe)
            die("io_uring_get_sqe");
    }
    return sqe;
}

static void ur_accept(struct io_uring *ring, int lfd)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(lfd, OP_ACCEPT));
}

static void ur_recv(struct io_uring *ring, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, IN_BUF - c->in_len, 0);
    io_uring_sqe_set_data64(sqe, tag(c->fd, OP_RECV));
}

static void ur_send(struct io_uring *ring, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    io_uring_prep_send(sqe, c->fd, response + c->out_off, response_len - c->out_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(c->fd, OP_SEND));
}

/* After a recv or a send: one operation in flight per connection, never two. */
static void ur_next(struct io_uring *ring, struct conn *c)
{
    if (c->owed > 0)
        ur_send(ring, c);
    else if (c->close_after)
        conn_close(c);
    else
        ur_recv(ring, c);
}

/* ------------------------------------------ io_uring, multishot recv */

#define BGID 1
#define NBUFS 1024          /* provided buffers, shared by all connections */
#define BUF_SIZE 4096

static struct io_uring_buf_ring *buf_ring;
static char *buf_mem;

static void setup_buf_ring(struct io_uring *ring)
{
    /* liburing 2.3 has no io_uring_setup_buf_ring(): map and register by hand. */
    if (posix_memalign((void **)&buf_ring, 4096, NBUFS * sizeof(struct io_uring_buf)) != 0 ||
        posix_memalign((void **)&buf_mem, 4096, (size_t)NBUFS * BUF_SIZE) != 0)
        die("posix_memalign");
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)buf_ring,
                                   .ring_entries = NBUFS, .bgid = BGID};
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret < 0) {
        errno = -ret;
        die("io_uring_register_buf_ring");
    }
    io_uring_buf_ring_init(buf_ring);
    for (int i = 0; i < NBUFS; i++)
        io_uring_buf_ring_add(buf_ring, buf_mem + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUFS), i);
    io_uring_buf_ring_advance(buf_ring, NBUFS);
}

static void return_buf(unsigned short bid)
{
    io_uring_buf_ring_add(buf_ring, buf_mem + (size_t)bid * BUF_SIZE, BUF_SIZE, bid,
                          io_uring_buf_ring_mask(NBUFS), 0);
    io_uring_buf_ring_advance(buf_ring, 1);
}

static void ms_arm_recv(struct io_uring *ring, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ring);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, tag(c->fd, OP_RECV));
    c->recv_armed = 1;
}

/* The fd may only be closed when no CQE can still name it. */
static void ms_maybe_close(struct conn *c)
{
    if (c->closing && !c->recv_armed && !c->send_inflight)
        conn_close(c);
}

static void ms_start_closing(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->owed = 0;
    /* A multishot recv holds the socket open; shutdown ends it with a final CQE. */
    if (c->recv_armed)
        shutdown(c->fd, SHUT_RDWR);
    ms_maybe_close(c);
}

static void ms_on_recv(struct io_uring *ring, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        c->recv_armed = 0;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned short bid = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (res > 0 && !c->closing && !c->close_after) {  /* bytes after a closing request are dropped */
            if ((size_t)res > IN_BUF - c->in_len) {
                ms_start_closing(c);  /* header too large */
            } else {
                memcpy(c->in + c->in_len, buf_mem + (size_t)bid * BUF_SIZE, (size_t)res);
                c->in_len += (size_t)res;
            }
        }
        return_buf(bid);
    }
    if (c->closing) {
        ms_maybe_close(c);
        return;
    }
    if (res == -ENOBUFS) {
        if (!c->recv_armed)
            ms_arm_recv(ring, c);  /* buffers ran out for a moment: they are back now */
        return;
    }
    if (res <= 0) {
        ms_start_closing(c);
        return;
    }
    if (parse_requests(c) < 0) {
        ms_start_closing(c);
        return;
    }
    if (c->owed > 0 && !c->send_inflight) {
        ur_send(ring, c);
        c->send_inflight = 1;
    }
    if (!c->recv_armed && !c->close_after)
        ms_arm_recv(ring, c);  /* the kernel may end a multishot recv at any time */
}

static void ms_on_send(struct io_uring *ring, struct conn *c, int res)
{
    c->send_inflight = 0;
    if (c->closing) {
        ms_maybe_close(c);
        return;
    }
    if (res == -EINTR || res == -EAGAIN) {
        ur_send(ring, c);
        c->send_inflight = 1;
        return;
    }
    if (res < 0) {
        ms_start_closing(c);
        return;
    }
    if (!advance_send(c, (size_t)res)) {
        ur_send(ring, c);
        c->send_inflight = 1;
    } else if (c->close_after) {
        ms_start_closing(c);
    }
}

static void ring_init(struct io_uring *ring)
{
    /* Cheapest task-work mode the kernel accepts: completions are run when we
     * wait, not by interrupting us. Fall back for kernels older than 6.1. */
    unsigned modes[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -EINVAL;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        struct io_uring_params p = {.flags = modes[i]};
        ret = io_uring_queue_init_params(RING_ENTRIES, ring, &p);
        if (ret == 0)
            return;
    }
    errno = -ret;
    die("io_uring_queue_init_params");
}

static void run_uring(int lfd, int sfd, int multishot)
{
    struct io_uring ring;
    ring_init(&ring);
    if (multishot)
        setup_buf_ring(&ring);
    struct signalfd_siginfo siginfo;
    struct io_uring_sqe *sqe = get_sqe(&ring);
    io_uring_prep_read(sqe, sfd, &siginfo, sizeof siginfo, 0);
    io_uring_sqe_set_data64(sqe, tag(sfd, OP_SIGNAL));
    ur_accept(&ring, lfd);

    for (;;) {
        int ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            errno = -ret;
            die("io_uring_submit_and_wait");
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        int stop = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            int op = (int)(ud & 0xff);
            int fd = (int)(ud >> 8);
            int res = cqe->res;
            if (op == OP_SIGNAL) {
                stop = 1;
                continue;
            }
            if (op == OP_ACCEPT) {
                if (res >= 0) {
                    struct conn *c = conn_new(res);
                    if (c && multishot)
                        ms_arm_recv(&ring, c);
                    else if (c)
                        ur_recv(&ring, c);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    ur_accept(&ring, lfd);  /* multishot ended (e.g. error): re-arm */
                continue;
            }
            struct conn *c = conns[fd];
            if (!c || c->fd < 0)
                continue;
            if (multishot) {
                if (op == OP_RECV)
                    ms_on_recv(&ring, c, cqe);
                else if (op == OP_SEND)
                    ms_on_send(&ring, c, res);
                continue;
            }
            if (op == OP_RECV) {
                if (res == -EINTR || res == -EAGAIN) {
                    ur_recv(&ring, c);
                    continue;
                }
                if (res <= 0) {
                    conn_close(c);
                    continue;
                }
                c->in_len += (size_t)res;
                if (parse_requests(c) < 0) {
                    conn_close(c);
                    continue;
                }
                ur_next(&ring, c);
            } else if (op == OP_SEND) {
                if (res == -EINTR || res == -EAGAIN) {
                    ur_send(&ring, c);
                    continue;
                }
                if (res < 0) {
                    conn_close(c);
                    continue;
                }
                advance_send(c, (size_t)res);
                ur_next(&ring, c);
            }
        }
        io_uring_cq_advance(&ring, seen);
        if (stop)
            break;
    }
    /* The pending accept holds a reference to the listening socket, which
     * io_uring_queue_exit drops only later in a kernel worker: the next
     * trial's server on this port could not bind. shutdown() takes the socket
     * out of LISTEN now, and a bound socket that isn't listening does not
     * block a new SO_REUSEADDR bind. */
    shutdown(lfd, SHUT_RDWR);
    io_uring_queue_exit(&ring);
    free(buf_ring);
    free(buf_mem);
}

/* ---------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr, "usage: http_server --backend epoll|uring|uring-mshot [--bind ADDR] [--port P] [--size BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *backend = NULL, *addr = "127.0.0.1";
    int port = 8080;
    long size = 64;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--backend") == 0)
            backend = argv[++i];
        else if (strcmp(argv[i], "--bind") == 0)
            addr = argv[++i];
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--size") == 0)
            size = atol(argv[++i]);
        else
            usage();
    }
    if (!backend || port <= 0 || port > 65535 || size < 0)
        usage();
    int multishot = strcmp(backend, "uring-mshot") == 0;
    int use_uring = multishot || strcmp(backend, "uring") == 0;
    if (!use_uring && strcmp(backend, "epoll") != 0)
        usage();

    build_response((size_t)size);
    int sfd = make_signalfd();
    int lfd = open_listener(addr, port, !use_uring);
    fprintf(stderr, "http_server: %s backend on %s:%d, body %ld bytes\n", backend, addr, port, size);
    if (use_uring)
        run_uring(lfd, sfd, multishot);
    else
        run_epoll(lfd, sfd);

    for (int fd = 0; fd < MAX_FDS; fd++) {
        if (conns[fd]) {
            if (conns[fd]->fd >= 0)
                close(conns[fd]->fd);
            free(conns[fd]);
        }
    }
    close(lfd);
    close(sfd);
    free(response);
    fprintf(stderr, "http_server: served %llu requests\n", served);
    return 0;
}
