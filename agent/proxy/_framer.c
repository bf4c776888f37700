/* The message framer of agent/proxy/pgwire.py (`PyFramer`) in C: the same behaviour, message for message.

   The proxy cuts every byte it forwards into protocol messages; in Python the loop over message headers costs
   about a microsecond a message, more than the audit's own work on most of them. This type does the loop and
   calls the same Python callbacks (`handler(type, body, truncated)`, `wants(type)`, `skipped(type, length)`)
   with the same arguments in the same order. tests/agent/proxy/test_pgwire.py runs its properties against both
   implementations. Built by setup.py as an optional extension: without it, pgwire uses `PyFramer`. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <ctype.h>

/* ---------------------------------------------------------------------------------------------------------------
   The lane: the audit of the most common round trips without a Python call per message.

   Most statements a busy application sends are one of two round trips on an idle session:
     - a prepared statement run through the unnamed portal: Bind, [Describe of the portal,] Execute, Sync, answered
       by BindComplete, [RowDescription or NoData,] DataRow*, CommandComplete, ReadyForQuery (libpq, and so
       pgbench and psycopg, always describe the portal);
     - a simple query holding one statement: Query, answered by [RowDescription, DataRow*,] CommandComplete,
       ReadyForQuery.
   When the Python audit (agent.proxy.audit.AuditSession) has nothing pending (no slot, no portal) and the statement
   is one it has marked as fast (its event needs nothing but times and counts: no customer keys, no cursor, no
   exclusion), the framers of both directions hand these messages to the lane instead. The lane holds them, counts
   rows and bytes, and at ReadyForQuery writes the statement's db.query event from the template the Python side made
   for it: the same bytes QueryEncoder writes, with this statement's times, counts and id.

   Anything else that arrives while the lane holds a round trip (an error, a notice of a parameter change, a second
   pipelined statement, a message cut by the cap) makes it give up: it replays what it held to the Python audit, in
   the order it arrived (rows as one count), and the message goes on to Python as usual. So the Python audit is
   always the authority, and the lane only ever skips work whose outcome it knows.
   --------------------------------------------------------------------------------------------------------------- */

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>

#include "../_be32.h"

enum { SPEC_NONE = 0, SPEC_BIND = 1, SPEC_QUERY = 2 };
enum { HELD_CLIENT = 0, HELD_SERVER = 1, HELD_ROWS = 2 };

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->data, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int
buf_put(Buf *b, const void *src, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

/* Where every lane of a proxy writes its finished events: one buffer in spoolproc's frame item format, taken by
   the audit writer (agent/proxy/writer.py) a batch at a time, so that no Python call is made per statement.
   `wake(soon)` tells the writer there is something to take: `soon` when a batch is full. */
typedef struct {
    PyObject_HEAD
    Buf out;
    Py_ssize_t count;
    Py_ssize_t batch;
    Py_ssize_t limit; /* events held at most: past it, new ones are shed and counted (the spool process is stuck) */
    long long shed;
    PyObject *wake;
} Outbox;

static int
outbox_added(Outbox *o)
{
    o->count++;
    if (o->count != 1 && o->count != o->batch)
        return 0;
    PyObject *r = PyObject_CallOneArg(o->wake, o->count == o->batch ? Py_True : Py_False);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int
Outbox_init(Outbox *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"wake", "batch", "limit", NULL};
    PyObject *wake;
    Py_ssize_t batch = 256, limit = 200000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|nn", kwlist, &wake, &batch, &limit))
        return -1;
    Py_XSETREF(self->wake, Py_NewRef(wake));
    self->batch = batch > 1 ? batch : 2;
    self->limit = limit > self->batch ? limit : self->batch;
    return 0;
}

static PyObject *
Outbox_take(Outbox *self, PyObject *Py_UNUSED(ignored))
{
    if (self->count == 0)
        Py_RETURN_NONE;
    PyObject *blob = PyBytes_FromStringAndSize(self->out.data, self->out.len);
    if (blob == NULL)
        return NULL;
    PyObject *r = Py_BuildValue("(Nn)", blob, self->count);
    if (r == NULL)
        return NULL;
    self->out.len = 0;
    self->count = 0;
    if (self->out.cap > (1 << 22)) { /* give back what a burst made it grow to */
        PyMem_Free(self->out.data);
        self->out.data = NULL;
        self->out.cap = 0;
    }
    return r;
}

static int
Outbox_traverse(Outbox *self, visitproc visit, void *arg)
{
    Py_VISIT(self->wake);
    return 0;
}

static int
Outbox_clear(Outbox *self)
{
    Py_CLEAR(self->wake);
    return 0;
}

static void
Outbox_dealloc(Outbox *self)
{
    PyObject_GC_UnTrack(self);
    Outbox_clear(self);
    PyMem_Free(self->out.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Outbox_methods[] = {
    {"take", (PyCFunction)Outbox_take, METH_NOARGS, "(frame item bytes, count) of all the events written, or None"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Outbox_members[] = {
    {"count", T_PYSSIZET, offsetof(Outbox, count), READONLY, "events waiting to be taken"},
    {"shed", T_LONGLONG, offsetof(Outbox, shed), READONLY, "events not written because `limit` were waiting"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject OutboxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.proxy._framer.Outbox",
    .tp_doc = "Outbox(wake, batch=256, limit=200000): where lanes write their events (see above)",
    .tp_basicsize = sizeof(Outbox),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Outbox_init,
    .tp_dealloc = (destructor)Outbox_dealloc,
    .tp_traverse = (traverseproc)Outbox_traverse,
    .tp_clear = (inquiry)Outbox_clear,
    .tp_methods = Outbox_methods,
    .tp_members = Outbox_members,
};

typedef struct {
    PyObject_HEAD
    int enabled;            /* set by the Python side once the session is ready and fully audited */
    PyObject *client;       /* AuditSession.client_message */
    PyObject *server;       /* AuditSession.server_message */
    PyObject *rows_seen;    /* AuditSession.rows_seen(count, bytes) */
    PyObject *adopt;        /* AuditSession.adopt_unnamed(prepared or None): what the unnamed portal is now */
    PyObject *query_entry;  /* AuditSession.fast_query(sql bytes, shape bytes) -> (head, tail) or None */
    Outbox *outbox;         /* the proxy's: where finished events go */
    PyObject *statements;   /* AuditSession.statements: name -> Prepared (its .fast: (head, tail) or None) */
    PyObject *portals;      /* AuditSession.portals */
    PyObject *slots;        /* AuditSession.slots (a deque) */
    PyObject *queries;      /* the lane's own: query shape -> (head, tail) or None */
    /* the round trip held */
    int spec, cstage, sstage;
    int described, answered; /* a Describe of the unnamed portal was held, and its answer */
    PyObject *entry;        /* (head, tail) */
    PyObject *prepared;     /* the Prepared of a SPEC_BIND */
    double started, ended;
    long long rows, bytes, counted;
    Buf held;               /* (kind:1, type:1, len:4, body) per held message; rows: (2, 'D', count:4, bytes:8) */
    Py_ssize_t rows_item;   /* where the held row count is, when it is the last item held; else -1 */
    long long fast, gave_up; /* round trips written by the lane, and given back to Python */
} Lane;

static PyObject *str_fast, *str_running, *str_empty;

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* UUIDv7 ids as agent.proxy.writer.FastIds makes them: one random draw, then increments (RFC 9562 "monotonic
   random"), the millisecond from the event's own time. */
static uint64_t id_rand;
static uint32_t id_n = 1u << 20;

static int
next_id(double when, char out[37])
{
    if (++id_n >= (1u << 20)) {
        uint64_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        id_rand = r & ((1ULL << 60) - 1);
        id_n = 0;
    }
    uint64_t rand = id_rand + id_n;
    uint64_t ms = (uint64_t)(when * 1000.0) & ((1ULL << 48) - 1);
    uint64_t high = ms << 16 | 0x7ULL << 12 | ((rand >> 62) & 0xFFF);
    uint64_t low = (2ULL << 62) | (rand & ((1ULL << 62) - 1));
    /* 8-4-4-4-12 hex digits, by hand: snprintf's format parsing costs more than the rest of the event */
    static const char hex[] = "0123456789abcdef";
    int at = 36;
    for (int i = 0; i < 12; i++, low >>= 4)
        out[--at] = hex[low & 0xF];
    out[--at] = '-';
    for (int i = 0; i < 4; i++, low >>= 4)
        out[--at] = hex[low & 0xF];
    out[--at] = '-';
    for (int i = 0; i < 4; i++, high >>= 4)
        out[--at] = hex[high & 0xF];
    out[--at] = '-';
    for (int i = 0; i < 4; i++, high >>= 4)
        out[--at] = hex[high & 0xF];
    out[--at] = '-';
    for (int i = 0; i < 8; i++, high >>= 4)
        out[--at] = hex[high & 0xF];
    out[36] = '\0';
    return 0;
}

/* Decimal digits of v at out; returns how many. */
static int
put_digits(char *out, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* "2026-11-27T13:18:33.123456Z" (with its quotes), as msgspec writes an aware UTC datetime. The part up to the
   second is made once per second. */
static long long ts_second = LLONG_MIN;
static char ts_prefix[40];
static int ts_prefix_len;

static int
format_ts(double when, char *out, size_t size)
{
    double whole = floor(when);
    long long sec = (long long)whole;
    long usec = lround((when - whole) * 1e6);
    if (usec >= 1000000) {
        sec += 1;
        usec -= 1000000;
    }
    if (sec != ts_second) {
        time_t t = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL)
            return -1;
        int n = snprintf(ts_prefix, sizeof ts_prefix, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (n < 0 || n >= (int)sizeof ts_prefix)
            return -1;
        ts_prefix_len = n;
        ts_second = sec;
    }
    if ((size_t)ts_prefix_len + 10 > size)
        return -1;
    memcpy(out, ts_prefix, ts_prefix_len);
    char *p = out + ts_prefix_len;
    if (usec) {
        *p++ = '.';
        for (int i = 5; i >= 0; i--, usec /= 10)
            p[i] = (char)('0' + usec % 10);
        p += 6;
    }
    *p++ = 'Z';
    *p++ = '"';
    return (int)(p - out);
}

/* round(ms, 3) as msgspec writes a float: shortest form, at least one digit after the point. */
static int
format_ms(double seconds, char *out, size_t size)
{
    double ms = seconds * 1000.0;
    if (!(ms >= 0.0) || ms > 1e15)
        ms = 0.0;
    unsigned long long micros = (unsigned long long)llround(ms * 1000.0);
    int n = put_digits(out, micros / 1000);
    unsigned frac = (unsigned)(micros % 1000);
    out[n++] = '.';
    if (frac == 0) {
        out[n++] = '0';
        return n;
    }
    out[n++] = (char)('0' + frac / 100);
    if (frac % 100) {
        out[n++] = (char)('0' + frac / 10 % 10);
        if (frac % 10)
            out[n++] = (char)('0' + frac % 10);
    }
    return n;
}

static void
lane_reset(Lane *L)
{
    L->spec = SPEC_NONE;
    L->cstage = L->sstage = 0;
    L->described = L->answered = 0;
    Py_CLEAR(L->entry);
    Py_CLEAR(L->prepared);
    L->rows = L->bytes = 0;
    L->counted = -1;
    L->held.len = 0;
    L->rows_item = -1;
}

/* One db.query event from its template, in spoolproc's frame item format: (36, id, body length, body). */
static int
write_event(Buf *out, PyObject *head, PyObject *tail, double started, double ended, long long rows, long long bytes,
            long long counted)
{
    char id[37], ts[48], ms[48], nums[96];
    if (next_id(started, id) < 0)
        return -1;
    int tsn = format_ts(started, ts, sizeof ts);
    if (tsn < 0 || tsn >= (int)sizeof ts) {
        PyErr_SetString(PyExc_ValueError, "a time the event cannot be written with");
        return -1;
    }
    int msn = format_ms(ended - started < 0 ? 0 : ended - started, ms, sizeof ms);
    long long n = rows ? rows : (counted > 0 ? counted : 0);
    int numn = 8;
    memcpy(nums, ",\"rows\":", 8);
    numn += put_digits(nums + numn, (unsigned long long)(n < 0 ? 0 : n));
    memcpy(nums + numn, ",\"bytes\":", 9);
    numn += 9;
    numn += put_digits(nums + numn, (unsigned long long)(bytes < 0 ? 0 : bytes));
    memcpy(nums + numn, "},\"id\":\"", 8);
    numn += 8;
    Py_ssize_t hl = PyBytes_GET_SIZE(head), tl = PyBytes_GET_SIZE(tail);
    Py_ssize_t body = hl + tsn + 15 + msn + numn + 36 + 7 + tsn + tl;
    if (buf_reserve(out, 8 + 36 + body) < 0)
        return -1;
    char *p = out->data + out->len;
    put_u32(p, 36);
    memcpy(p + 4, id, 36);
    put_u32(p + 40, (uint32_t)body);
    p += 44;
    memcpy(p, PyBytes_AS_STRING(head), hl);
    p += hl;
    memcpy(p, ts, tsn);
    p += tsn;
    memcpy(p, ",\"duration_ms\":", 15);
    p += 15;
    memcpy(p, ms, msn);
    p += msn;
    memcpy(p, nums, numn);
    p += numn;
    memcpy(p, id, 36);
    p += 36;
    memcpy(p, "\",\"ts\":", 7);
    p += 7;
    memcpy(p, ts, tsn);
    p += tsn;
    memcpy(p, PyBytes_AS_STRING(tail), tl);
    p += tl;
    out->len = p - out->data;
    return 0;
}

/* The finished round trip's event into `out`. */
static int
lane_emit(Lane *L)
{
    L->fast++;
    if (L->outbox->count >= L->outbox->limit) {
        L->outbox->shed++;
        return 0;
    }
    if (write_event(&L->outbox->out, PyTuple_GET_ITEM(L->entry, 0), PyTuple_GET_ITEM(L->entry, 1), L->started,
                    L->ended, L->rows, L->bytes, L->counted) < 0)
        return -1;
    return outbox_added(L->outbox);
}

/* event(head, tail, started, ended, rows, bytes, counted): what the lane writes for a round trip, for tests. */
static PyObject *
lane_event(PyObject *module, PyObject *args)
{
    PyObject *head, *tail;
    double started, ended;
    long long rows, bytes, counted;
    if (!PyArg_ParseTuple(args, "O!O!ddLLL", &PyBytes_Type, &head, &PyBytes_Type, &tail, &started, &ended, &rows,
                          &bytes, &counted))
        return NULL;
    Buf out = {NULL, 0, 0};
    if (write_event(&out, head, tail, started, ended, rows, bytes, counted) < 0) {
        PyMem_Free(out.data);
        return NULL;
    }
    PyObject *r = PyBytes_FromStringAndSize(out.data, out.len);
    PyMem_Free(out.data);
    return r;
}

static int
hold(Lane *L, int kind, int t, const char *body, Py_ssize_t len)
{
    char h[6];
    L->rows_item = -1;
    h[0] = (char)kind;
    h[1] = (char)t;
    put_u32(h + 2, (uint32_t)len);
    if (buf_put(&L->held, h, 6) < 0)
        return -1;
    return buf_put(&L->held, body, len);
}

static int
hold_row(Lane *L, long long length)
{
    L->rows++;
    L->bytes += length;
    Buf *b = &L->held;
    if (L->rows_item >= 0) { /* the last held item is a row count: add to it */
        char *p = b->data + L->rows_item + 6;
        uint32_t count = get_u32(p) + 1;
        long long bytes;
        memcpy(&bytes, p + 4, 8);
        bytes += length;
        put_u32(p, count);
        memcpy(p + 4, &bytes, 8);
        return 0;
    }
    char item[18];
    item[0] = HELD_ROWS;
    item[1] = 'D';
    put_u32(item + 2, 12);
    put_u32(item + 6, 1);
    memcpy(item + 10, &length, 8);
    Py_ssize_t at = b->len;
    if (buf_put(b, item, 18) < 0)
        return -1;
    L->rows_item = at;
    return 0;
}

static int
call3(PyObject *fn, int t, const char *body, Py_ssize_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(body, len);
    if (b == NULL)
        return -1;
    PyObject *args[3] = {PyLong_FromLong(t), b, Py_False};
    PyObject *r = args[0] == NULL ? NULL : PyObject_Vectorcall(fn, args, 3, NULL);
    Py_XDECREF(args[0]);
    Py_DECREF(b);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Give the held round trip back to the Python audit, message by message in the order it came. */
static int
lane_give_up(Lane *L)
{
    if (L->spec == SPEC_NONE)
        return 0;
    L->gave_up++;
    /* the held bytes are copied first: the Python calls below may not re-enter this lane, but be safe */
    Py_ssize_t n = L->held.len;
    char *copy = PyMem_Malloc(n ? n : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, L->held.data, n);
    lane_reset(L);
    int rc = 0;
    Py_ssize_t pos = 0;
    while (pos + 6 <= n && rc == 0) {
        int kind = copy[pos], t = (unsigned char)copy[pos + 1];
        Py_ssize_t len = get_u32(copy + pos + 2);
        const char *body = copy + pos + 6;
        if (kind == HELD_CLIENT)
            rc = call3(L->client, t, body, len);
        else if (kind == HELD_SERVER)
            rc = call3(L->server, t, body, len);
        else {
            long long bytes;
            memcpy(&bytes, body + 4, 8);
            PyObject *r = PyObject_CallFunction(L->rows_seen, "kL", (unsigned long)get_u32(body), bytes);
            if (r == NULL)
                rc = -1;
            Py_XDECREF(r);
        }
        pos += 6 + len;
    }
    PyMem_Free(copy);
    return rc;
}

static int
is_template(PyObject *entry)
{
    return PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 2 && PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 0))
           && PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1));
}

/* Whether the Python audit is idle: nothing owed by the server, no portal open. */
static int
python_idle(Lane *L)
{
    Py_ssize_t n = PyObject_Length(L->slots);
    if (n != 0)
        return n < 0 ? -1 : 0;
    Py_ssize_t portals = PyDict_GET_SIZE(L->portals);
    if (portals == 0)
        return 1;
    if (portals > 1)
        return 0;
    /* Inside a transaction the unnamed portal of the last statement lives on; a Bind replaces it, and the end of
       the transaction drops it. A portal stopped at its row limit is the Python audit's to finish. */
    PyObject *portal = PyDict_GetItemWithError(L->portals, str_empty);
    if (portal == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *running = PyObject_GetAttr(portal, str_running);
    if (running == NULL)
        return -1;
    int idle = running == Py_None;
    Py_DECREF(running);
    return idle;
}

/* The shape of a simple query: its bytes with number and string literals as '?', or -1 when the text holds
   anything whose reading is not certain here (comments, dollar or escape strings, quoted identifiers,
   placeholders, several statements, bytes outside ASCII outside strings); such queries take the Python path.
   Two texts of the same shape are redacted alike by agent.proxy.redact, so the shape can key the cache. */
static Py_ssize_t
query_shape(const char *s, Py_ssize_t n, char *out)
{
    Py_ssize_t o = 0, i = 0;
    int ended = 0; /* a ';' was seen: only whitespace may follow */
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (ended) {
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != ';')
                return -1;
            out[o++] = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80 || c == '"' || c == '$' || c == '\\' || c == 0)
            return -1;
        if (c == '-' && i + 1 < n && s[i + 1] == '-')
            return -1;
        if (c == '/' && i + 1 < n && s[i + 1] == '*')
            return -1;
        unsigned char prev = i ? (unsigned char)s[i - 1] : ' ';
        int prev_word = isalnum(prev) || prev == '_' || prev == '$' || prev == '&' || prev >= 0x80;
        if (c == '\'') {
            if (prev_word)
                return -1; /* E'…', B'…', X'…', N'…', U&'…' */
            i++;
            for (;;) {
                if (i >= n)
                    return -1;
                if (s[i] == '\'') {
                    if (i + 1 < n && s[i + 1] == '\'') {
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                i++;
            }
            out[o++] = '?';
            continue;
        }
        if (c == '.' && i + 1 < n && isdigit((unsigned char)s[i + 1]) && !prev_word && prev != '.')
            return -1; /* .5 */
        if (isdigit(c) && !prev_word && prev != '.') {
            while (i < n && (isdigit((unsigned char)s[i]) || s[i] == '_'))
                i++;
            if (i < n && s[i] == '.') {
                i++;
                while (i < n && isdigit((unsigned char)s[i]))
                    i++;
            }
            if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                Py_ssize_t j = i + 1;
                if (j < n && (s[j] == '+' || s[j] == '-'))
                    j++;
                if (j < n && isdigit((unsigned char)s[j])) {
                    while (j < n && isdigit((unsigned char)s[j]))
                        j++;
                    i = j;
                }
            }
            out[o++] = '?';
            continue;
        }
        if (c == ';')
            ended = 1;
        out[o++] = (char)c;
        i++;
    }
    return o;
}

/* A client message, whole. 1: the lane took it; 0: the Python audit takes it (whatever the lane held has been
   given back first); -1: an exception is set. */
static int
lane_client(Lane *L, int t, const char *body, Py_ssize_t len)
{
    if (L->spec == SPEC_BIND) {
        if (L->cstage == 1 && t == 'D' && !L->described && len == 2 && body[0] == 'P' && body[1] == 0) {
            L->described = 1; /* libpq describes the unnamed portal between Bind and Execute */
            return hold(L, HELD_CLIENT, t, body, len) < 0 ? -1 : 1;
        }
        if (L->cstage == 1 && t == 'E') {
            const char *nul = memchr(body, 0, len);
            if (nul == body && len == 5) { /* the unnamed portal, any row limit */
                L->started = now();
                L->cstage = 2;
                return hold(L, HELD_CLIENT, t, body, len) < 0 ? -1 : 1;
            }
        }
        else if (L->cstage == 2 && t == 'S' && len == 0) {
            L->cstage = 3;
            return hold(L, HELD_CLIENT, t, body, len) < 0 ? -1 : 1;
        }
        return lane_give_up(L) < 0 ? -1 : 0;
    }
    if (L->spec != SPEC_NONE)
        return lane_give_up(L) < 0 ? -1 : 0;
    if (!L->enabled || (t != 'B' && t != 'Q'))
        return 0;
    int idle = python_idle(L);
    if (idle <= 0)
        return idle;
    if (t == 'B') {
        const char *nul = memchr(body, 0, len);
        if (nul != body) /* a named portal */
            return 0;
        const char *end = memchr(body + 1, 0, len - 1);
        if (end == NULL)
            return 0;
        PyObject *name = PyBytes_FromStringAndSize(body + 1, end - body - 1);
        if (name == NULL)
            return -1;
        PyObject *prepared = PyDict_GetItemWithError(L->statements, name); /* borrowed */
        Py_DECREF(name);
        if (prepared == NULL)
            return PyErr_Occurred() ? -1 : 0;
        PyObject *entry = PyObject_GetAttr(prepared, str_fast);
        if (entry == NULL)
            return -1;
        if (!is_template(entry)) {
            Py_DECREF(entry);
            return 0;
        }
        L->spec = SPEC_BIND;
        L->cstage = 1;
        L->entry = entry;
        Py_INCREF(prepared);
        L->prepared = prepared;
        return hold(L, HELD_CLIENT, t, body, len) < 0 ? -1 : 1;
    }
    /* 'Q' */
    if (len < 1 || body[len - 1] != 0 || len > 65536)
        return 0;
    char stack[1024];
    char *shape = len <= (Py_ssize_t)sizeof stack ? stack : PyMem_Malloc(len);
    if (shape == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t sn = query_shape(body, len - 1, shape);
    PyObject *entry = NULL;
    int rc = 0;
    if (sn > 0) {
        PyObject *key = PyBytes_FromStringAndSize(shape, sn);
        if (key == NULL) {
            rc = -1;
            goto out;
        }
        entry = PyDict_GetItemWithError(L->queries, key);
        if (entry == NULL && PyErr_Occurred()) {
            Py_DECREF(key);
            rc = -1;
            goto out;
        }
        if (entry == NULL) {
            PyObject *sql = PyBytes_FromStringAndSize(body, len - 1);
            if (sql == NULL) {
                Py_DECREF(key);
                rc = -1;
                goto out;
            }
            PyObject *args[2] = {sql, key};
            entry = PyObject_Vectorcall(L->query_entry, args, 2, NULL);
            Py_DECREF(sql);
            if (entry == NULL) {
                Py_DECREF(key);
                rc = -1;
                goto out;
            }
            if (PyDict_GET_SIZE(L->queries) >= 1000)
                PyDict_Clear(L->queries);
            if (PyDict_SetItem(L->queries, key, entry) < 0) {
                Py_DECREF(key);
                Py_DECREF(entry);
                rc = -1;
                goto out;
            }
            Py_DECREF(entry); /* the dict holds it */
        }
        Py_DECREF(key);
        if (is_template(entry)) {
            Py_INCREF(entry);
            L->spec = SPEC_QUERY;
            L->cstage = 3;
            L->entry = entry;
            L->started = now();
            rc = hold(L, HELD_CLIENT, t, body, len) < 0 ? -1 : 1;
        }
    }
out:
    if (shape != stack)
        PyMem_Free(shape);
    return rc;
}

/* Rows from a CommandComplete tag, as agent.proxy.pgwire.command_rows reads them; -1 for none. */
static long long
tag_rows(const char *body, Py_ssize_t len)
{
    while (len > 0 && body[len - 1] == 0)
        len--;
    Py_ssize_t sp = len - 1;
    while (sp >= 0 && body[sp] != ' ')
        sp--;
    if (sp < 0 || sp == len - 1 || len - sp - 1 > 18)
        return -1;
    long long v = 0;
    for (Py_ssize_t i = sp + 1; i < len; i++) {
        if (!isdigit((unsigned char)body[i]))
            return -1;
        v = v * 10 + (body[i] - '0');
    }
    return v;
}

/* A server message, whole (not a DataRow: see lane_row). Same answers as lane_client. */
static int
lane_server(Lane *L, int t, const char *body, Py_ssize_t len)
{
    if (L->spec == SPEC_NONE)
        return 0;
    if (t == 'N' || t == 'A') /* notices and notifications: the Python audit passes over them too */
        return 1;
    if (L->spec == SPEC_BIND) {
        if (t == '2' && L->sstage == 0) {
            L->sstage = 1;
            return hold(L, HELD_SERVER, t, body, len) < 0 ? -1 : 1;
        }
        if ((t == 'T' || t == 'n') && L->sstage == 1 && L->described && !L->answered && !L->rows) {
            L->answered = 1; /* the answer to the Describe */
            return hold(L, HELD_SERVER, t, body, len) < 0 ? -1 : 1;
        }
    }
    else if (t == 'T' && L->sstage == 0) {
        L->sstage = 1;
        return hold(L, HELD_SERVER, t, body, len) < 0 ? -1 : 1;
    }
    if (t == 'C' && (L->sstage == 1 || (L->spec == SPEC_QUERY && L->sstage == 0))) {
        L->ended = now();
        if (!L->rows)
            L->counted = tag_rows(body, len);
        L->sstage = 2;
        return hold(L, HELD_SERVER, t, body, len) < 0 ? -1 : 1;
    }
    if (t == 'Z' && L->sstage == 2 && L->cstage == 3 && len == 1) {
        PyObject *portal = NULL; /* what the unnamed portal is now, for the Python audit's portals */
        if (body[0] != 'I' && L->spec == SPEC_BIND)
            portal = L->prepared; /* still in a transaction: the unnamed portal lives on */
        else if (body[0] == 'I' && PyDict_GET_SIZE(L->portals))
            portal = Py_None; /* the transaction ended: so did the portal of its last statement */
        if (portal != NULL) {
            PyObject *r = PyObject_CallOneArg(L->adopt, portal);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
        if (lane_emit(L) < 0)
            return -1;
        lane_reset(L);
        return 1;
    }
    return lane_give_up(L) < 0 ? -1 : 0;
}

/* A DataRow of `length` body bytes (whole or not): 1 when counted by the lane. */
static int
lane_row(Lane *L, long long length)
{
    if (L->sstage != 1)
        return lane_give_up(L) < 0 ? -1 : 0;
    return hold_row(L, length) < 0 ? -1 : 1;
}

static int
Lane_init(Lane *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"client", "server", "rows_seen", "adopt", "query_entry", "outbox", "statements",
                             "portals", "slots", NULL};
    PyObject *o[9];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOO!O!O!O", kwlist, &o[0], &o[1], &o[2], &o[3], &o[4],
                                     &OutboxType, &o[5], &PyDict_Type, &o[6], &PyDict_Type, &o[7], &o[8]))
        return -1;
    PyObject **dst[9] = {&self->client, &self->server, &self->rows_seen, &self->adopt, &self->query_entry,
                         (PyObject **)&self->outbox, &self->statements, &self->portals, &self->slots};
    for (int i = 0; i < 9; i++) {
        Py_INCREF(o[i]);
        Py_XSETREF(*dst[i], o[i]);
    }
    Py_XSETREF(self->queries, PyDict_New());
    if (self->queries == NULL)
        return -1;
    lane_reset(self);
    return 0;
}

static int
Lane_traverse(Lane *self, visitproc visit, void *arg)
{
    Py_VISIT(self->client);
    Py_VISIT(self->server);
    Py_VISIT(self->rows_seen);
    Py_VISIT(self->adopt);
    Py_VISIT(self->query_entry);
    Py_VISIT(self->outbox);
    Py_VISIT(self->statements);
    Py_VISIT(self->portals);
    Py_VISIT(self->slots);
    Py_VISIT(self->queries);
    Py_VISIT(self->entry);
    Py_VISIT(self->prepared);
    return 0;
}

static int
Lane_clear(Lane *self)
{
    Py_CLEAR(self->client);
    Py_CLEAR(self->server);
    Py_CLEAR(self->rows_seen);
    Py_CLEAR(self->adopt);
    Py_CLEAR(self->query_entry);
    Py_CLEAR(self->outbox);
    Py_CLEAR(self->statements);
    Py_CLEAR(self->portals);
    Py_CLEAR(self->slots);
    Py_CLEAR(self->queries);
    Py_CLEAR(self->entry);
    Py_CLEAR(self->prepared);
    return 0;
}

static void
Lane_dealloc(Lane *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    PyMem_Free(self->held.data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Lane_give_up(Lane *self, PyObject *Py_UNUSED(ignored))
{
    if (lane_give_up(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Lane_forget_queries(Lane *self, PyObject *Py_UNUSED(ignored))
{
    PyDict_Clear(self->queries);
    Py_RETURN_NONE;
}

static PyObject *
Lane_set_query(Lane *self, PyObject *args)
{
    PyObject *shape, *entry;
    if (!PyArg_ParseTuple(args, "O!O!", &PyBytes_Type, &shape, &PyTuple_Type, &entry))
        return NULL;
    if (PyTuple_GET_SIZE(entry) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(entry, 0))
        || !PyBytes_Check(PyTuple_GET_ITEM(entry, 1))) {
        PyErr_SetString(PyExc_TypeError, "a template is (head bytes, tail bytes)");
        return NULL;
    }
    if (PyDict_GET_SIZE(self->queries) >= 1000)
        PyDict_Clear(self->queries);
    if (PyDict_SetItem(self->queries, shape, entry) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Lane_methods[] = {
    {"give_up", (PyCFunction)Lane_give_up, METH_NOARGS, "Hand what is held to the Python audit."},
    {"set_query", (PyCFunction)Lane_set_query, METH_VARARGS,
     "set_query(shape, (head, tail)): the lane may take simple queries of this shape from now on."},
    {"forget_queries", (PyCFunction)Lane_forget_queries, METH_NOARGS,
     "Drop the cached simple-query templates (the session's application name changed)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Lane_members[] = {
    {"enabled", T_INT, offsetof(Lane, enabled), 0, "whether the lane may take round trips"},
    {"fast", T_LONGLONG, offsetof(Lane, fast), READONLY, "round trips the lane wrote"},
    {"gave_up", T_LONGLONG, offsetof(Lane, gave_up), READONLY, "round trips it gave back to the Python audit"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.proxy._framer.Lane",
    .tp_doc = "Lane(client, server, rows_seen, adopt, query_entry, outbox, statements, portals, slots): see the top "
              "of the lane's section in agent/proxy/_framer.c",
    .tp_basicsize = sizeof(Lane),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_methods = Lane_methods,
    .tp_members = Lane_members,
};

/* ------------------------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *handler;
    PyObject *wants;
    PyObject *skipped;
    PyObject *pend; /* bytes: the start of a message whose end has not arrived */
    Py_ssize_t skip; /* bytes of the current message still to pass over */
    Py_ssize_t cap;
    Lane *lane; /* or NULL */
    int side;   /* 0: client to server, 1: server to client (for the lane) */
} Framer;

static void
Framer_dealloc(Framer *self)
{
    Py_XDECREF(self->handler);
    Py_XDECREF(self->wants);
    Py_XDECREF(self->skipped);
    Py_XDECREF(self->pend);
    Py_XDECREF(self->lane);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Framer_init(Framer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handler", "wants", "skipped", "cap", "lane", "side", NULL};
    PyObject *handler, *wants, *skipped, *lane = Py_None;
    Py_ssize_t cap = 1 << 20;
    int side = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|nOi", kwlist, &handler, &wants, &skipped, &cap, &lane, &side))
        return -1;
    if (lane != Py_None && !PyObject_TypeCheck(lane, &LaneType)) {
        PyErr_SetString(PyExc_TypeError, "lane must be a Lane or None");
        return -1;
    }
    Py_XSETREF(self->lane, lane == Py_None ? NULL : (Lane *)Py_NewRef(lane));
    self->side = side ? 1 : 0;
    if (cap < 0) {
        PyErr_SetString(PyExc_ValueError, "cap must not be negative");
        return -1;
    }
    Py_INCREF(handler);
    Py_XSETREF(self->handler, handler);
    Py_INCREF(wants);
    Py_XSETREF(self->wants, wants);
    Py_INCREF(skipped);
    Py_XSETREF(self->skipped, skipped);
    Py_XSETREF(self->pend, PyBytes_FromStringAndSize(NULL, 0));
    if (self->pend == NULL)
        return -1;
    self->skip = 0;
    self->cap = cap;
    return 0;
}

static PyObject *
protocol_error(int t, unsigned long long length)
{
    PyObject *mod = PyImport_ImportModule("agent.proxy.pgwire");
    if (mod == NULL)
        return NULL;
    PyObject *exc = PyObject_GetAttrString(mod, "ProtocolError");
    Py_DECREF(mod);
    if (exc == NULL)
        return NULL;
    PyErr_Format(exc, "message of type %d announces length %llu, below the minimum of 4", t, length);
    Py_DECREF(exc);
    return NULL;
}

/* handler(t, body, truncated); returns 0, or -1 with an exception set */
static int
call_handler(Framer *self, int t, const char *body, Py_ssize_t len, int truncated)
{
    PyObject *b = PyBytes_FromStringAndSize(body, len);
    if (b == NULL)
        return -1;
    PyObject *args[3] = {PyLong_FromLong(t), b, truncated ? Py_True : Py_False};
    PyObject *r = args[0] == NULL ? NULL : PyObject_Vectorcall(self->handler, args, 3, NULL);
    Py_XDECREF(args[0]);
    Py_DECREF(b);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* wants(t): 1, 0, or -1 with an exception set */
static int
call_wants(Framer *self, int t)
{
    PyObject *args[1] = {PyLong_FromLong(t)};
    if (args[0] == NULL)
        return -1;
    PyObject *r = PyObject_Vectorcall(self->wants, args, 1, NULL);
    Py_DECREF(args[0]);
    if (r == NULL)
        return -1;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

static int
call_skipped(Framer *self, int t, Py_ssize_t length)
{
    PyObject *args[2] = {PyLong_FromLong(t), PyLong_FromSsize_t(length)};
    PyObject *r = args[0] == NULL || args[1] == NULL ? NULL : PyObject_Vectorcall(self->skipped, args, 2, NULL);
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
Framer_feed(Framer *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *joined = NULL; /* pend + data, when a message was split */
    const unsigned char *data = view.buf;
    Py_ssize_t n = view.len;
    Py_ssize_t pos = 0;
    PyObject *result = NULL;

    if (self->skip) {
        if (self->skip >= n) {
            self->skip -= n;
            result = Py_None;
            goto done;
        }
        pos = self->skip;
        self->skip = 0;
    }
    if (PyBytes_GET_SIZE(self->pend)) {
        Py_ssize_t plen = PyBytes_GET_SIZE(self->pend);
        joined = PyBytes_FromStringAndSize(NULL, plen + (n - pos));
        if (joined == NULL)
            goto done;
        memcpy(PyBytes_AS_STRING(joined), PyBytes_AS_STRING(self->pend), plen);
        memcpy(PyBytes_AS_STRING(joined) + plen, data + pos, n - pos);
        Py_SETREF(self->pend, PyBytes_FromStringAndSize(NULL, 0));
        if (self->pend == NULL)
            goto done;
        data = (const unsigned char *)PyBytes_AS_STRING(joined);
        n = PyBytes_GET_SIZE(joined);
        pos = 0;
    }
    const unsigned long long cap = (unsigned long long)self->cap;
    const unsigned long long limit = cap + 4; /* the longest length field of a message kept whole */
    while (n - pos >= 5) {
        int t = data[pos];
        unsigned long long length = ((unsigned long long)data[pos + 1] << 24) | ((unsigned long long)data[pos + 2] << 16)
                                    | ((unsigned long long)data[pos + 3] << 8) | (unsigned long long)data[pos + 4];
        unsigned long long end = (unsigned long long)pos + 1 + length;
        int whole = end <= (unsigned long long)n;
        Lane *lane = self->lane;
        if (lane != NULL && length >= 4) {
            int r = 0;
            if (self->side && t == 0x44) { /* a DataRow: the lane counts it without its body */
                if (lane->spec != SPEC_NONE)
                    r = lane_row(lane, (long long)(length - 4));
            }
            else if (whole && length <= limit)
                r = self->side ? lane_server(lane, t, (const char *)data + pos + 5, (Py_ssize_t)(length - 4))
                               : lane_client(lane, t, (const char *)data + pos + 5, (Py_ssize_t)(length - 4));
            else if (length > limit || (t == 0x64 && lane->spec != SPEC_NONE))
                r = lane_give_up(lane); /* longer than the cap, or CopyData to skip: the Python audit's */
            if (r < 0)
                goto done;
            if (r) {
                if (!whole) {
                    self->skip = (Py_ssize_t)(end - (unsigned long long)n);
                    result = Py_None;
                    goto done;
                }
                pos = (Py_ssize_t)end;
                continue;
            }
        }
        if (whole && length >= 4 && length <= limit && t != 0x44 && t != 0x64) {
            if (call_handler(self, t, (const char *)data + pos + 5, (Py_ssize_t)(length - 4), 0) < 0)
                goto done;
            pos = (Py_ssize_t)end;
            continue;
        }
        if (length < 4) {
            protocol_error(t, length);
            goto done;
        }
        if (whole && length <= limit) {
            int w = call_wants(self, t);
            if (w < 0)
                goto done;
            if (w) {
                if (call_handler(self, t, (const char *)data + pos + 5, (Py_ssize_t)(length - 4), 0) < 0)
                    goto done;
            }
            else if (call_skipped(self, t, (Py_ssize_t)(length - 4)) < 0)
                goto done;
            pos = (Py_ssize_t)end;
            continue;
        }
        /* The message does not end in this chunk, or is longer than the cap. */
        int w = call_wants(self, t);
        if (w < 0)
            goto done;
        if (!w) {
            if (call_skipped(self, t, (Py_ssize_t)(length - 4)) < 0)
                goto done;
            goto past;
        }
        if (length > limit) {
            if ((unsigned long long)n < (unsigned long long)pos + 5 + cap)
                break; /* wait until the kept prefix is complete */
            if (call_handler(self, t, (const char *)data + pos + 5, (Py_ssize_t)cap, 1) < 0)
                goto done;
            goto past;
        }
        break;
    past: /* over the message just handled or skipped, into the next chunks if it goes on there */
        if (!whole) {
            self->skip = (Py_ssize_t)(end - (unsigned long long)n);
            result = Py_None;
            goto done;
        }
        pos = (Py_ssize_t)end;
    }
    if (pos < n) {
        PyObject *rest = PyBytes_FromStringAndSize((const char *)data + pos, n - pos);
        if (rest == NULL)
            goto done;
        Py_SETREF(self->pend, rest);
    }
    result = Py_None;
done:
    Py_XDECREF(joined);
    PyBuffer_Release(&view);
    Py_XINCREF(result);
    return result;
}

static PyMethodDef Framer_methods[] = {
    {"feed", (PyCFunction)Framer_feed, METH_O, "Cut the bytes into messages and hand each on."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Framer_members[] = {
    {"cap", T_PYSSIZET, offsetof(Framer, cap), READONLY, "bytes of one message kept at most"},
    {"_pend", T_OBJECT_EX, offsetof(Framer, pend), READONLY, "the start of a message not yet complete"},
    {"_skip", T_PYSSIZET, offsetof(Framer, skip), READONLY, "bytes of the current message still to pass over"},
    {"lane", T_OBJECT, offsetof(Framer, lane), READONLY, "the Lane this framer hands common messages to, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FramerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.proxy._framer.Framer",
    .tp_doc = "Framer(handler, wants, skipped, cap=1 << 20, lane=None, side=0): see agent.proxy.pgwire.PyFramer",
    .tp_basicsize = sizeof(Framer),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Framer_init,
    .tp_dealloc = (destructor)Framer_dealloc,
    .tp_methods = Framer_methods,
    .tp_members = Framer_members,
};

/* ------------------------------------------------------------------------------------------------------------ */

/* Relay: `data_received` of the proxy's two protocols (agent/proxy/session.py), in C: the bytes go to the other
   side's `transport.write` first, then to the audit's feed. When the feed is a Framer's own `feed`, the framer is
   called directly. The behaviour is agent.proxy.pgwire.PyRelay's, which is used when this module was not built. */

typedef struct {
    PyObject_HEAD
    PyObject *write; /* the other side's transport.write, or NULL before there is one */
    PyObject *feed;  /* what the bytes are audited by after forwarding, or NULL */
} Relay;

static PyObject *str_early_data, *str_audit_fault;

static int
Relay_traverse(Relay *self, visitproc visit, void *arg)
{
    Py_VISIT(self->write);
    Py_VISIT(self->feed);
    return 0;
}

static int
Relay_clear(Relay *self)
{
    Py_CLEAR(self->write);
    Py_CLEAR(self->feed);
    return 0;
}

static void
Relay_dealloc(Relay *self)
{
    PyObject_GC_UnTrack(self);
    Relay_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Framer_feed(Framer *self, PyObject *arg);

static PyObject *
Relay_data_received(Relay *self, PyObject *data)
{
    if (self->write == NULL)
        return PyObject_CallMethodOneArg((PyObject *)self, str_early_data, data);
    PyObject *write = Py_NewRef(self->write);
    PyObject *r = PyObject_CallOneArg(write, data);
    Py_DECREF(write);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    PyObject *feed = self->feed;
    if (feed == NULL)
        Py_RETURN_NONE;
    Py_INCREF(feed);
    if (PyCFunction_Check(feed) && PyCFunction_GET_FUNCTION(feed) == (PyCFunction)Framer_feed &&
        PyCFunction_GET_SELF(feed) != NULL && PyObject_TypeCheck(PyCFunction_GET_SELF(feed), &FramerType))
        r = Framer_feed((Framer *)PyCFunction_GET_SELF(feed), data);
    else
        r = PyObject_CallOneArg(feed, data);
    Py_DECREF(feed);
    if (r != NULL) {
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL; /* KeyboardInterrupt, SystemExit: not the audit's fault */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    r = PyObject_CallMethodOneArg((PyObject *)self, str_audit_fault, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef Relay_methods[] = {
    {"data_received", (PyCFunction)Relay_data_received, METH_O,
     "Forward the bytes to relay_write, then audit them with relay_feed (its exception goes to audit_fault); "
     "before there is a relay_write, hand them to early_data."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Relay_members[] = {
    {"relay_write", T_OBJECT, offsetof(Relay, write), 0, "the other side's transport.write, or None"},
    {"relay_feed", T_OBJECT, offsetof(Relay, feed), 0, "what forwarded bytes are fed to, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.proxy._framer.Relay",
    .tp_doc = "Relay: a protocol base whose data_received forwards, then audits (see agent.proxy.pgwire.PyRelay)",
    .tp_basicsize = sizeof(Relay),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Relay_dealloc,
    .tp_traverse = (traverseproc)Relay_traverse,
    .tp_clear = (inquiry)Relay_clear,
    .tp_methods = Relay_methods,
    .tp_members = Relay_members,
};

static PyMethodDef module_methods[] = {
    {"event", lane_event, METH_VARARGS,
     "event(head, tail, started, ended, rows, bytes, counted): one event as the lane writes it (a frame item)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef framer_module = {
    PyModuleDef_HEAD_INIT, "_framer", "PostgreSQL protocol framing and the audit's lane in C (see agent.proxy.pgwire).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__framer(void)
{
    if (PyType_Ready(&FramerType) < 0 || PyType_Ready(&LaneType) < 0 || PyType_Ready(&OutboxType) < 0 ||
        PyType_Ready(&RelayType) < 0)
        return NULL;
    str_fast = PyUnicode_InternFromString("fast");
    str_running = PyUnicode_InternFromString("running");
    str_empty = PyBytes_FromStringAndSize("", 0);
    str_early_data = PyUnicode_InternFromString("early_data");
    str_audit_fault = PyUnicode_InternFromString("audit_fault");
    if (str_fast == NULL || str_running == NULL || str_empty == NULL || str_early_data == NULL ||
        str_audit_fault == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&framer_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FramerType);
    if (PyModule_AddObject(m, "Framer", (PyObject *)&FramerType) < 0) {
        Py_DECREF(&FramerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&OutboxType);
    if (PyModule_AddObject(m, "Outbox", (PyObject *)&OutboxType) < 0) {
        Py_DECREF(&OutboxType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RelayType);
    if (PyModule_AddObject(m, "Relay", (PyObject *)&RelayType) < 0) {
        Py_DECREF(&RelayType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
