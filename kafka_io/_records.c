/* The records of one Kafka v2 record batch's (decompressed) payload, as plain tuples: the fetcher's work on
 * every message, in C.
 *
 * A record is: length, attributes (int8), timestamp delta, offset delta, key length and key, value length and
 * value, header count and headers (each a key string and a nullable value); lengths and deltas are zigzag
 * varints, a length of -1 a null. Headers are read only when asked for: valueloop's events carry none, and the
 * hot path skips them by the record's length.
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

/* A record's headers as a list of (key str, value bytes or None); a new reference, NULL on error. */
static PyObject *read_headers(Cursor *c, Py_ssize_t end, int64_t offset) {
    int64_t count;
    if (read_zigzag(c, &count) < 0) return NULL;
    if (count < 0 || count > end - c->i) {
        PyErr_Format(RecordFormatError, "record at offset %lld counts %lld headers", (long long)offset,
                     (long long)count);
        return NULL;
    }
    PyObject *headers = PyList_New(0);
    for (int64_t h = 0; headers != NULL && h < count; h++) {
        int64_t length;
        if (read_zigzag(c, &length) < 0 || length < 0 || length > end - c->i) {
            if (!PyErr_Occurred())
                PyErr_Format(RecordFormatError, "a header key of record at offset %lld runs past its length",
                             (long long)offset);
            Py_CLEAR(headers);
            break;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)c->b + c->i, (Py_ssize_t)length, "replace");
        c->i += (Py_ssize_t)length;
        PyObject *value = key ? read_blob(c, end, offset) : NULL;
        PyObject *pair = value ? PyTuple_Pack(2, key, value) : NULL;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (pair == NULL || PyList_Append(headers, pair) < 0) Py_CLEAR(headers);
        Py_XDECREF(pair);
    }
    return headers;
}

static PyObject *append_records(PyObject *self, PyObject *args) {
    Py_buffer payload;
    Py_ssize_t count;
    long long base_offset, base_ts, first;
    PyObject *fixed_ts, *out;
    int with_headers = 0;
    if (!PyArg_ParseTuple(args, "y*nLLOLO!|p", &payload, &count, &base_offset, &base_ts, &fixed_ts, &first,
                          &PyList_Type, &out, &with_headers))
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
        PyObject *headers = NULL;
        if (with_headers && offset >= first && (headers = read_headers(&c, end, offset)) == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            goto fail;
        }
        if (c.i > end) {
            Py_DECREF(key);
            Py_DECREF(value);
            Py_XDECREF(headers);
            PyErr_Format(RecordFormatError, "record at offset %lld runs past its length", offset);
            goto fail;
        }
        c.i = end;
        if (offset >= first) {
            long long timestamp = has_fixed ? fixed : base_ts + timestamp_delta;
            PyObject *record = headers ? Py_BuildValue("(LLNNN)", offset, timestamp, key, value, headers)
                                       : Py_BuildValue("(LLNN)", offset, timestamp, key, value);
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

/* -- records packed for a runner's shuffle ------------------------------------------------------------------
 *
 * Per record: offset and timestamp as little-endian int64, then the key and the value, each an int32 length
 * (-1 for None) and its bytes. A list of records becomes one bytes object, which a runner's coders copy
 * rather than encode and decode four values per record at every step of a shuffle.
 */

static void put_i64(char *at, int64_t v) {
    for (int k = 0; k < 8; k++) at[k] = (char)((uint64_t)v >> (8 * k));
}

static int64_t get_i64(const uint8_t *at) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | at[k];
    return (int64_t)v;
}

static int blob_size(PyObject *blob, Py_ssize_t *size) {
    if (blob == Py_None) {
        *size = 0;
        return 0;
    }
    if (!PyBytes_Check(blob)) {
        PyErr_Format(PyExc_TypeError, "a record's key and value are bytes or None, not %.100s",
                     Py_TYPE(blob)->tp_name);
        return -1;
    }
    *size = PyBytes_GET_SIZE(blob);
    if (*size > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a record's key or value is over 2 GiB");
        return -1;
    }
    return 0;
}

static char *put_blob(char *at, PyObject *blob) {
    int32_t n = blob == Py_None ? -1 : (int32_t)PyBytes_GET_SIZE(blob);
    for (int k = 0; k < 4; k++) at[k] = (char)((uint32_t)n >> (8 * k));
    at += 4;
    if (n > 0) {
        memcpy(at, PyBytes_AS_STRING(blob), n);
        at += n;
    }
    return at;
}

static PyObject *pack_records(PyObject *self, PyObject *records) {
    if (!PyList_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "pack_records takes a list of (offset, timestamp_ms, key, value) tuples");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records), total = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *record = PyList_GET_ITEM(records, r);
        Py_ssize_t key, value;
        if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != 4) {
            PyErr_Format(PyExc_TypeError, "record %zd is not an (offset, timestamp_ms, key, value) tuple", r);
            return NULL;
        }
        if (blob_size(PyTuple_GET_ITEM(record, 2), &key) < 0 || blob_size(PyTuple_GET_ITEM(record, 3), &value) < 0)
            return NULL;
        total += 24 + key + value;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *record = PyList_GET_ITEM(records, r);
        long long offset = PyLong_AsLongLong(PyTuple_GET_ITEM(record, 0));
        long long timestamp = PyLong_AsLongLong(PyTuple_GET_ITEM(record, 1));
        if ((offset == -1 || timestamp == -1) && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        put_i64(at, offset);
        put_i64(at + 8, timestamp);
        at = put_blob(put_blob(at + 16, PyTuple_GET_ITEM(record, 2)), PyTuple_GET_ITEM(record, 3));
    }
    return out;
}

static PyObject *take_blob(const uint8_t *b, Py_ssize_t n, Py_ssize_t *i) {
    if (n - *i < 4) {
        PyErr_SetString(RecordFormatError, "packed records end inside a length");
        return NULL;
    }
    int32_t size = (int32_t)((uint32_t)b[*i] | (uint32_t)b[*i + 1] << 8 | (uint32_t)b[*i + 2] << 16 |
                             (uint32_t)b[*i + 3] << 24);
    *i += 4;
    if (size == -1) Py_RETURN_NONE;
    if (size < 0 || size > n - *i) {
        PyErr_Format(RecordFormatError, "packed records: length %d at byte %zd overruns them", size, *i - 4);
        return NULL;
    }
    PyObject *blob = PyBytes_FromStringAndSize((const char *)b + *i, size);
    *i += size;
    return blob;
}

static PyObject *unpack_records(PyObject *self, PyObject *arg) {
    Py_buffer packed;
    if (PyObject_GetBuffer(arg, &packed, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *b = packed.buf;
    Py_ssize_t n = packed.len, i = 0;
    PyObject *out = PyList_New(0);
    while (out != NULL && i < n) {
        if (n - i < 16) {
            PyErr_SetString(RecordFormatError, "packed records end inside an offset or timestamp");
            Py_CLEAR(out);
            break;
        }
        long long offset = get_i64(b + i), timestamp = get_i64(b + i + 8);
        i += 16;
        PyObject *key = take_blob(b, n, &i);
        PyObject *value = key ? take_blob(b, n, &i) : NULL;
        if (value == NULL) {
            Py_XDECREF(key);
            Py_CLEAR(out);
            break;
        }
        PyObject *record = Py_BuildValue("(LLNN)", offset, timestamp, key, value);
        if (record == NULL || PyList_Append(out, record) < 0) Py_CLEAR(out);
        Py_XDECREF(record);
    }
    PyBuffer_Release(&packed);
    return out;
}

static PyMethodDef methods[] = {
    {"pack_records", pack_records, METH_O,
     PyDoc_STR("pack_records(records): a list of (offset, timestamp_ms, key, value) tuples as one bytes object.")},
    {"unpack_records", unpack_records, METH_O,
     PyDoc_STR("unpack_records(packed): the list of records that pack_records packed.")},
    {"append_records", append_records, METH_VARARGS,
     PyDoc_STR("append_records(payload, count, base_offset, base_timestamp, fixed_timestamp, first, out, "
               "with_headers=False): appends to the list `out` the (offset, timestamp_ms, key, value) of the batch "
               "payload's `count` records at offset `first` or later, with a fifth item, the headers as a list of "
               "(key, value) pairs, when `with_headers`; `fixed_timestamp` (not None) replaces every record's "
               "timestamp. Raises RecordFormatError when the payload is not `count` whole records.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kafka_io._records", "Kafka v2 record-batch payloads to tuples.", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    RecordFormatError = PyErr_NewExceptionWithDoc("kafka_io._records.RecordFormatError",
                                                  "A record batch's payload does not hold the records it counts.",
                                                  PyExc_ValueError, NULL);
    if (RecordFormatError == NULL || PyModule_AddObjectRef(m, "RecordFormatError", RecordFormatError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
