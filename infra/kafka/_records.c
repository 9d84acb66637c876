/* The records of one Kafka v2 record batch's (decompressed) payload, as plain tuples: the fetcher's work on
 * every message, in C.
 *
 * A record is: length, attributes (int8), timestamp delta, offset delta, key length and key, value length and
 * value, header count and headers; lengths and deltas are zigzag varints, a length of -1 a null. Headers are
 * not read: the record's length skips them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *RecordFormatError;

typedef struct {
    const uint8_t *b;
    Py_ssize_t n;
    Py_ssize_t i;
} Cursor;

static int read_zigzag(Cursor *c, int64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->i >= c->n) {
            PyErr_Format(RecordFormatError, "the payload ends inside a varint at byte %zd", c->i);
            return -1;
        }
        uint8_t byte = c->b[c->i++];
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
            return 0;
        }
    }
    PyErr_Format(RecordFormatError, "a varint longer than 10 bytes ends at byte %zd", c->i);
    return -1;
}

/* A key or value: its length, then its bytes; None for length -1. A new reference, NULL on error. */
static PyObject *read_blob(Cursor *c, Py_ssize_t end, int64_t offset) {
    int64_t length;
    if (read_zigzag(c, &length) < 0) return NULL;
    if (length == -1) Py_RETURN_NONE;
    if (length < 0 || length > end - c->i) {
        PyErr_Format(RecordFormatError, "record at offset %lld runs past its length", (long long)offset);
        return NULL;
    }
    PyObject *blob = PyBytes_FromStringAndSize((const char *)c->b + c->i, (Py_ssize_t)length);
    c->i += (Py_ssize_t)length;
    return blob;
}

static PyObject *append_records(PyObject *self, PyObject *args) {
    Py_buffer payload;
    Py_ssize_t count;
    long long base_offset, base_ts, first;
    PyObject *fixed_ts, *out;
    if (!PyArg_ParseTuple(args, "y*nLLOLO!", &payload, &count, &base_offset, &base_ts, &fixed_ts, &first,
                          &PyList_Type, &out))
        return NULL;
    long long fixed = 0;
    int has_fixed = fixed_ts != Py_None;
    if (has_fixed && (fixed = PyLong_AsLongLong(fixed_ts)) == -1 && PyErr_Occurred()) goto fail;
    Cursor c = {(const uint8_t *)payload.buf, payload.len, 0};
    for (Py_ssize_t r = 0; r < count; r++) {
        int64_t length, timestamp_delta, offset_delta;
        if (c.i == c.n) {
            PyErr_Format(RecordFormatError, "the payload holds %zd of the %zd records its batch counts", r, count);
            goto fail;
        }
        if (read_zigzag(&c, &length) < 0) goto fail;
        if (length < 0 || length > c.n - c.i) {
            PyErr_Format(RecordFormatError, "record %zd of %zd: length %lld overruns the payload", r, count,
                         (long long)length);
            goto fail;
        }
        Py_ssize_t end = c.i + (Py_ssize_t)length;
        c.i += 1;  /* attributes, unused */
        if (read_zigzag(&c, &timestamp_delta) < 0 || read_zigzag(&c, &offset_delta) < 0) goto fail;
        long long offset = base_offset + offset_delta;
        PyObject *key = read_blob(&c, end, offset);
        if (key == NULL) goto fail;
        PyObject *value = read_blob(&c, end, offset);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        if (c.i > end) {
            Py_DECREF(key);
            Py_DECREF(value);
            PyErr_Format(RecordFormatError, "record at offset %lld runs past its length", offset);
            goto fail;
        }
        c.i = end;  /* headers: unused */
        if (offset >= first) {
            PyObject *record = Py_BuildValue("(LLNN)", offset, has_fixed ? fixed : base_ts + timestamp_delta,
                                             key, value);
            if (record == NULL || PyList_Append(out, record) < 0) {
                Py_XDECREF(record);
                goto fail;
            }
            Py_DECREF(record);
        } else {
            Py_DECREF(key);
            Py_DECREF(value);
        }
    }
    if (c.i != c.n) {
        PyErr_Format(RecordFormatError, "%zd bytes after its %zd records", c.n - c.i, count);
        goto fail;
    }
    PyBuffer_Release(&payload);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&payload);
    return NULL;
}

static PyMethodDef methods[] = {
    {"append_records", append_records, METH_VARARGS,
     PyDoc_STR("append_records(payload, count, base_offset, base_timestamp, fixed_timestamp, first, out): appends "
               "to the list `out` the (offset, timestamp_ms, key, value) of the batch payload's `count` records at "
               "offset `first` or later; `fixed_timestamp` (not None) replaces every record's timestamp. Raises "
               "RecordFormatError when the payload is not `count` whole records.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "infra.kafka._records", "Kafka v2 record-batch payloads to tuples.", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    RecordFormatError = PyErr_NewExceptionWithDoc("infra.kafka._records.RecordFormatError",
                                                  "A record batch's payload does not hold the records it counts.",
                                                  PyExc_ValueError, NULL);
    if (RecordFormatError == NULL || PyModule_AddObjectRef(m, "RecordFormatError", RecordFormatError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
