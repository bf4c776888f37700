/* The message framer of agent/proxy/pgwire.py (`PyFramer`) in C: the same behaviour, message for message.

   The proxy cuts every byte it forwards into protocol messages; in Python the loop over message headers costs
   about a microsecond a message, more than the audit's own work on most of them. This type does the loop and
   calls the same Python callbacks (`handler(type, body, truncated)`, `wants(type)`, `skipped(type, length)`)
   with the same arguments in the same order. tests/agent/proxy/test_pgwire.py runs its properties against both
   implementations. Built by setup.py as an optional extension: without it, pgwire uses `PyFramer`. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *handler;
    PyObject *wants;
    PyObject *skipped;
    PyObject *pend; /* bytes: the start of a message whose end has not arrived */
    Py_ssize_t skip; /* bytes of the current message still to pass over */
    Py_ssize_t cap;
} Framer;

static void
Framer_dealloc(Framer *self)
{
    Py_XDECREF(self->handler);
    Py_XDECREF(self->wants);
    Py_XDECREF(self->skipped);
    Py_XDECREF(self->pend);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Framer_init(Framer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handler", "wants", "skipped", "cap", NULL};
    PyObject *handler, *wants, *skipped;
    Py_ssize_t cap = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|n", kwlist, &handler, &wants, &skipped, &cap))
        return -1;
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
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FramerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent.proxy._framer.Framer",
    .tp_doc = "Framer(handler, wants, skipped, cap=1 << 20): see agent.proxy.pgwire.PyFramer",
    .tp_basicsize = sizeof(Framer),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Framer_init,
    .tp_dealloc = (destructor)Framer_dealloc,
    .tp_methods = Framer_methods,
    .tp_members = Framer_members,
};

static struct PyModuleDef framer_module = {
    PyModuleDef_HEAD_INIT, "_framer", "PostgreSQL protocol framing in C (see agent.proxy.pgwire).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__framer(void)
{
    if (PyType_Ready(&FramerType) < 0)
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
    return m;
}
