/* The spool's chain (agent/spool.py `chain`) in C, over a frame of events as the proxy's spool process receives
   them: for each event, `chain_seq` and `chain_prev` appended to its JSON object, and the SHA-256 of the result
   as the next event's `chain_prev`, byte for byte as `chain` writes them. It returns the rows' values flat, ready
   for the spool's multi-row INSERT, so that no Python object is made per event but the row's own values.
   tests/agent/test_spool_chain.py pins it to `chain`. Built by setup.py as an optional extension (it links
   OpenSSL's libcrypto, which Python's own hashlib uses); without it, the spool chains in Python. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

static uint32_t
get_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* chain_frame(payload, seq, prev, now) -> (values, count, size, head)

   payload: `(4-byte id length, id, 4-byte body length, body)*` (agent.spool.pack_items);
   values: [id, body, now] per event, flat; count: events; size: bytes of the bodies as stored;
   head: (last seq, its hash) or None when no event was chained (a body that is not a JSON object is stored as
   it is, as `chain` does). */
static PyObject *
chain_frame(PyObject *module, PyObject *args)
{
    Py_buffer view;
    long long seq;
    const char *prev;
    Py_ssize_t prev_len;
    PyObject *now;
    if (!PyArg_ParseTuple(args, "y*Ls#O", &view, &seq, &prev, &prev_len, &now))
        return NULL;
    if (prev_len > 64) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a chain hash is 64 hex digits");
        return NULL;
    }
    const unsigned char *p = view.buf;
    Py_ssize_t n = view.len, pos = 0, count = 0, size = 0;
    char link[65];
    memcpy(link, prev, prev_len);
    Py_ssize_t link_len = prev_len;
    int chained_any = 0;
    PyObject *values = PyList_New(0);
    if (values == NULL)
        goto fail;
    while (pos < n) {
        if (n - pos < 4)
            goto truncated;
        Py_ssize_t idn = get_u32(p + pos);
        if (n - pos - 4 < idn + 4)
            goto truncated;
        const unsigned char *id = p + pos + 4;
        Py_ssize_t bn = get_u32(p + pos + 4 + idn);
        if (n - pos - 8 - idn < bn)
            goto truncated;
        const unsigned char *body = p + pos + 8 + idn;
        pos += 8 + idn + bn;
        PyObject *eid = PyUnicode_DecodeUTF8((const char *)id, idn, "strict");
        if (eid == NULL)
            goto fail;
        /* a JSON object, once outer whitespace is set aside; else stored as it came */
        const unsigned char *b = body;
        Py_ssize_t bl = bn;
        if (!(bl >= 1 && b[0] == '{' && b[bl - 1] == '}')) {
            while (bl > 0 && is_space(b[0])) {
                b++;
                bl--;
            }
            while (bl > 0 && is_space(b[bl - 1]))
                bl--;
        }
        PyObject *row;
        if (bl >= 2 && b[0] == '{' && b[bl - 1] == '}') {
            seq++;
            /* ,"chain_seq":N,"chain_prev":"…"} by hand: snprintf's parsing costs about as much as the rest */
            char tail[128];
            int tn = 0;
            if (bl != 2)
                tail[tn++] = ',';
            memcpy(tail + tn, "\"chain_seq\":", 12);
            tn += 12;
            char digits[24];
            int dn = 0;
            for (unsigned long long v = (unsigned long long)seq; dn == 0 || v; v /= 10)
                digits[dn++] = (char)('0' + v % 10);
            while (dn)
                tail[tn++] = digits[--dn];
            if (link_len) {
                memcpy(tail + tn, ",\"chain_prev\":\"", 15);
                tn += 15;
                memcpy(tail + tn, link, link_len);
                tn += (int)link_len;
                tail[tn++] = '"';
            }
            tail[tn++] = '}';
            /* a bytearray: sqlite3 binds it as a blob without looking for an adapter, which it does for bytes */
            row = PyByteArray_FromStringAndSize(NULL, bl - 1 + tn);
            if (row == NULL) {
                Py_DECREF(eid);
                goto fail;
            }
            char *out = PyByteArray_AS_STRING(row);
            memcpy(out, b, bl - 1);
            memcpy(out + bl - 1, tail, tn);
            unsigned char md[SHA256_DIGEST_LENGTH];
            SHA256((const unsigned char *)out, bl - 1 + tn, md);
            static const char hex[] = "0123456789abcdef";
            for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
                link[2 * i] = hex[md[i] >> 4];
                link[2 * i + 1] = hex[md[i] & 15];
            }
            link_len = 64;
            chained_any = 1;
        }
        else {
            row = PyByteArray_FromStringAndSize((const char *)body, bn);
            if (row == NULL) {
                Py_DECREF(eid);
                goto fail;
            }
        }
        size += PyByteArray_GET_SIZE(row);
        int bad = PyList_Append(values, eid) < 0 || PyList_Append(values, row) < 0 || PyList_Append(values, now) < 0;
        Py_DECREF(eid);
        Py_DECREF(row);
        if (bad)
            goto fail;
        count++;
    }
    PyBuffer_Release(&view);
    PyObject *head;
    if (chained_any)
        head = Py_BuildValue("(Ls#)", seq, link, (Py_ssize_t)64);
    else
        head = Py_NewRef(Py_None);
    if (head == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    return Py_BuildValue("(NnnN)", values, count, size, head);
truncated:
    PyErr_SetString(PyExc_ValueError, "a frame of events ends inside an event");
fail:
    Py_XDECREF(values);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"chain_frame", chain_frame, METH_VARARGS,
     "chain_frame(payload, seq, prev, now) -> (values, count, size, head): see agent/_chain.c"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chain", "The spool's event chain in C (see agent.spool.chain).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__chain(void)
{
    return PyModule_Create(&module);
}
