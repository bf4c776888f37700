/* The spool's chain (agent/spool.py `chain`) in C, over a frame of events as the proxy's spool process receives
   them: for each event, `chain_seq` and `chain_prev` appended to its JSON object, and the SHA-256 of the result
   as the next event's `chain_prev`, byte for byte as `chain` writes them. It returns the chained frame packed as
   it came, which the spool stores as one row (Spool.put_packed), so that no Python object is made per event.
   tests/agent/test_spool_chain.py pins it to `chain`. Built by setup.py as an optional extension (it links
   OpenSSL's libcrypto, which Python's own hashlib uses); without it, the spool chains in Python. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#include "_be32.h"

static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* chain_packed(payload, seq, prev) -> (packed, count, head)

   payload: `(4-byte id length, id, 4-byte body length, body)*` (agent.spool.pack_items); packed: the same events in
   the same format, each JSON object chained on from `seq` and `prev`, for the spool to store as one row; count:
   events; head: (last seq, its hash) or None when no event was chained (a body that is not a JSON object is
   stored as it came, as `chain` does). */
static PyObject *
chain_packed(PyObject *module, PyObject *args)
{
    Py_buffer view;
    long long seq;
    const char *prev;
    Py_ssize_t prev_len;
    if (!PyArg_ParseTuple(args, "y*Ls#", &view, &seq, &prev, &prev_len))
        return NULL;
    if (prev_len > 64) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a chain hash is 64 hex digits");
        return NULL;
    }
    const unsigned char *p = view.buf;
    Py_ssize_t n = view.len, pos = 0, count = 0, len = 0, cap = n + n / 4 + 1024;
    char link[65];
    memcpy(link, prev, prev_len);
    Py_ssize_t link_len = prev_len;
    int chained_any = 0;
    char *out = PyMem_Malloc(cap);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
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
        if (len + 8 + idn + bn + 128 > cap) {
            Py_ssize_t want = (len + 8 + idn + bn + 128) * 2;
            char *grown = PyMem_Realloc(out, want);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            out = grown;
            cap = want;
        }
        put_u32(out + len, (uint32_t)idn);
        memcpy(out + len + 4, id, idn);
        len += 4 + idn;
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
        if (bl >= 2 && b[0] == '{' && b[bl - 1] == '}') {
            seq++;
            char *dst = out + len + 4;
            memcpy(dst, b, bl - 1);
            Py_ssize_t tn = bl - 1;
            if (bl != 2)
                dst[tn++] = ',';
            memcpy(dst + tn, "\"chain_seq\":", 12);
            tn += 12;
            char digits[24];
            int dn = 0;
            for (unsigned long long v = (unsigned long long)seq; dn == 0 || v; v /= 10)
                digits[dn++] = (char)('0' + v % 10);
            while (dn)
                dst[tn++] = digits[--dn];
            if (link_len) {
                memcpy(dst + tn, ",\"chain_prev\":\"", 15);
                tn += 15;
                memcpy(dst + tn, link, link_len);
                tn += link_len;
                dst[tn++] = '"';
            }
            dst[tn++] = '}';
            put_u32(out + len, (uint32_t)tn);
            unsigned char md[SHA256_DIGEST_LENGTH];
            SHA256((const unsigned char *)dst, tn, md);
            static const char hex[] = "0123456789abcdef";
            for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
                link[2 * i] = hex[md[i] >> 4];
                link[2 * i + 1] = hex[md[i] & 15];
            }
            link_len = 64;
            chained_any = 1;
            len += 4 + tn;
        }
        else {
            put_u32(out + len, (uint32_t)bn);
            memcpy(out + len + 4, body, bn);
            len += 4 + bn;
        }
        count++;
    }
    PyBuffer_Release(&view);
    PyObject *packed = PyBytes_FromStringAndSize(out, len);
    PyMem_Free(out);
    if (packed == NULL)
        return NULL;
    PyObject *head;
    if (chained_any)
        head = Py_BuildValue("(Ls#)", seq, link, (Py_ssize_t)64);
    else
        head = Py_NewRef(Py_None);
    if (head == NULL) {
        Py_DECREF(packed);
        return NULL;
    }
    return Py_BuildValue("(NnN)", packed, count, head);
truncated:
    PyErr_SetString(PyExc_ValueError, "a frame of events ends inside an event");
fail:
    PyMem_Free(out);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"chain_packed", chain_packed, METH_VARARGS,
     "chain_packed(payload, seq, prev) -> (packed, count, head): see agent/_chain.c"},
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
