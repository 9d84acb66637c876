/* Avro record bodies to Python dicts, in C: the decoder's work on every event.
 *
 * A Reader runs a program that `schemas.compiled.compile_reader` builds from a writer schema and a reader schema
 * (fields matched by name, reader-only fields left at their defaults, writer-only fields read and dropped):
 *
 *   record program = (keys, defaults, steps)
 *     keys      the reader's field names, in its order: the dict's keys
 *     defaults  a value per reader field, used when the writer has no such field
 *     steps     one (code, slot, sub) per writer field, in the writer's order: what to read, which reader
 *               field receives it (-1: read and drop), and the record program of a nested record
 *
 * Codes are the TYPE_* values below; an optional value (a union of null and one type) adds OPTIONAL_NULL_FIRST
 * or OPTIONAL_NULL_SECOND. Every read is checked against the end of the bytes: bad bytes raise MalformedBody,
 * or UnicodeDecodeError for a string that is not UTF-8, and never read beyond the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum {
    TYPE_BOOLEAN = 1, TYPE_INT = 2, TYPE_LONG = 3, TYPE_FLOAT = 4, TYPE_DOUBLE = 5, TYPE_BYTES = 6,
    TYPE_STRING = 7, TYPE_RECORD = 8,
    TYPE_MASK = 15, OPTIONAL_NULL_FIRST = 16, OPTIONAL_NULL_SECOND = 32,
};

#define MAX_FIELDS 256

static PyObject *MalformedBody;

typedef struct Record Record;

typedef struct {
    int code;
    Py_ssize_t slot;
    Record *sub;
} Step;

struct Record {
    Py_ssize_t nkeys;
    PyObject **keys;      /* interned str, owned */
    PyObject **defaults;  /* owned */
    Py_ssize_t nsteps;
    Step *steps;
};

typedef struct {
    const uint8_t *b;
    Py_ssize_t n;
    Py_ssize_t i;
} Cursor;

static void free_record(Record *r) {
    if (r == NULL) return;
    for (Py_ssize_t k = 0; k < r->nkeys; k++) {
        Py_XDECREF(r->keys ? r->keys[k] : NULL);
        Py_XDECREF(r->defaults ? r->defaults[k] : NULL);
    }
    for (Py_ssize_t s = 0; r->steps && s < r->nsteps; s++) free_record(r->steps[s].sub);
    PyMem_Free(r->keys);
    PyMem_Free(r->defaults);
    PyMem_Free(r->steps);
    PyMem_Free(r);
}

static Record *build_record(PyObject *program) {
    PyObject *keys, *defaults, *steps;
    if (!PyArg_ParseTuple(program, "O!O!O!;a record program is (keys, defaults, steps)", &PyTuple_Type, &keys,
                          &PyTuple_Type, &defaults, &PyTuple_Type, &steps))
        return NULL;
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys), nsteps = PyTuple_GET_SIZE(steps);
    if (PyTuple_GET_SIZE(defaults) != nkeys || nkeys > MAX_FIELDS || nsteps > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "a record program needs a default per key, at most 256 fields");
        return NULL;
    }
    Record *r = PyMem_Calloc(1, sizeof(Record));
    if (r == NULL) return (Record *)PyErr_NoMemory();
    r->keys = PyMem_Calloc(nkeys ? nkeys : 1, sizeof(PyObject *));
    r->defaults = PyMem_Calloc(nkeys ? nkeys : 1, sizeof(PyObject *));
    r->steps = PyMem_Calloc(nsteps ? nsteps : 1, sizeof(Step));
    r->nkeys = nkeys;
    r->nsteps = nsteps;
    if (!r->keys || !r->defaults || !r->steps) {
        free_record(r);
        return (Record *)PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "record keys are str");
            free_record(r);
            return NULL;
        }
        Py_INCREF(key);
        PyUnicode_InternInPlace(&key);
        r->keys[k] = key;
        r->defaults[k] = Py_NewRef(PyTuple_GET_ITEM(defaults, k));
    }
    char filled[MAX_FIELDS] = {0}; /* a reader field receives one writer field at most */
    for (Py_ssize_t s = 0; s < nsteps; s++) {
        int code;
        Py_ssize_t slot;
        PyObject *sub;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(steps, s), "inO;a step is (code, slot, sub)", &code, &slot, &sub)) {
            free_record(r);
            return NULL;
        }
        int type = code & TYPE_MASK;
        if (type < TYPE_BOOLEAN || type > TYPE_RECORD || slot < -1 || slot >= nkeys || (slot >= 0 && filled[slot]++) ||
            (type == TYPE_RECORD && (code & ~TYPE_MASK))) {
            PyErr_Format(PyExc_ValueError, "step %zd: code %d, slot %zd is not a step of this program", s, code, slot);
            free_record(r);
            return NULL;
        }
        r->steps[s].code = code;
        r->steps[s].slot = slot;
        if (type == TYPE_RECORD && (r->steps[s].sub = build_record(sub)) == NULL) {
            free_record(r);
            return NULL;
        }
    }
    return r;
}

static int malformed(const char *what, Py_ssize_t at) {
    PyErr_Format(MalformedBody, "%s at byte %zd", what, at);
    return -1;
}

static int read_varint(Cursor *c, uint64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->i >= c->n) return malformed("the record ends inside a number", c->i);
        uint8_t byte = c->b[c->i++];
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = value;
            return 0;
        }
    }
    return malformed("a varint longer than 10 bytes ends", c->i);
}

static int read_long(Cursor *c, int64_t *out) {
    uint64_t z;
    if (read_varint(c, &z) < 0) return -1;
    *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    return 0;
}

static PyObject *read_record(Cursor *c, Record *r, Py_ssize_t single);

/* Reads one value of `code` at the cursor; stores a new reference in *out, or drops it when out is NULL. */
static int read_value(Cursor *c, int code, Record *sub, PyObject **out) {
    PyObject *value = NULL;
    if (code & (OPTIONAL_NULL_FIRST | OPTIONAL_NULL_SECOND)) {
        if (c->i >= c->n) return malformed("the record ends before a union branch", c->i);
        uint8_t branch = c->b[c->i++];
        uint8_t some = (code & OPTIONAL_NULL_FIRST) ? 2 : 0;  /* the zigzagged index of the non-null branch */
        if (branch == 2 - some) {
            if (out) *out = Py_NewRef(Py_None);
            return 0;
        }
        if (branch != some) {
            PyErr_Format(MalformedBody, "union branch byte %d at byte %zd", branch, c->i - 1);
            return -1;
        }
    }
    switch (code & TYPE_MASK) {
    case TYPE_BOOLEAN: {
        if (c->i >= c->n) return malformed("the record ends before a boolean", c->i);
        uint8_t byte = c->b[c->i++];
        if (byte > 1) {
            PyErr_Format(MalformedBody, "boolean byte %d at byte %zd", byte, c->i - 1);
            return -1;
        }
        value = Py_NewRef(byte ? Py_True : Py_False);
        break;
    }
    case TYPE_INT:
    case TYPE_LONG: {
        int64_t n;
        if (read_long(c, &n) < 0) return -1;
        if (out == NULL) return 0;
        value = PyLong_FromLongLong(n);
        break;
    }
    case TYPE_FLOAT:
    case TYPE_DOUBLE: {
        Py_ssize_t size = (code & TYPE_MASK) == TYPE_FLOAT ? 4 : 8;
        if (c->n - c->i < size) return malformed("the record ends inside a floating-point number", c->i);
        double x = size == 4 ? PyFloat_Unpack4((const char *)c->b + c->i, 1)
                             : PyFloat_Unpack8((const char *)c->b + c->i, 1);
        if (x == -1.0 && PyErr_Occurred()) return -1;
        c->i += size;
        if (out == NULL) return 0;
        value = PyFloat_FromDouble(x);
        break;
    }
    case TYPE_BYTES:
    case TYPE_STRING: {
        int64_t length;
        Py_ssize_t at = c->i;
        if (read_long(c, &length) < 0) return -1;
        if (length < 0 || length > c->n - c->i) {
            PyErr_Format(MalformedBody, "length %lld at byte %zd overruns the record", (long long)length, at);
            return -1;
        }
        const char *start = (const char *)c->b + c->i;
        c->i += (Py_ssize_t)length;
        /* A dropped string is still decoded: bytes that are not UTF-8 make the message malformed either way. */
        value = (code & TYPE_MASK) == TYPE_STRING ? PyUnicode_DecodeUTF8(start, (Py_ssize_t)length, NULL)
                                                  : PyBytes_FromStringAndSize(start, (Py_ssize_t)length);
        break;
    }
    case TYPE_RECORD:
        value = read_record(c, sub, -1);
        break;
    }
    if (value == NULL) return -1;
    if (out) *out = value;
    else Py_DECREF(value);
    return 0;
}

/* A record's dict; with `single` >= 0, only the value of that reader field (the steps stop after it). */
static PyObject *read_record(Cursor *c, Record *r, Py_ssize_t single) {
    PyObject *values[MAX_FIELDS];
    PyObject *result = NULL;
    memset(values, 0, sizeof(PyObject *) * r->nkeys);
    for (Py_ssize_t s = 0; s < r->nsteps; s++) {
        Step *step = &r->steps[s];
        if (read_value(c, step->code, step->sub, step->slot >= 0 ? &values[step->slot] : NULL) < 0) goto done;
    }
    if (single >= 0) {
        result = values[single];
        values[single] = NULL;
        if (result == NULL) result = Py_NewRef(r->defaults[single]);
        goto done;
    }
    result = _PyDict_NewPresized(r->nkeys);
    if (result == NULL) goto done;
    for (Py_ssize_t k = 0; k < r->nkeys; k++) {
        if (PyDict_SetItem(result, r->keys[k], values[k] ? values[k] : r->defaults[k]) < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    for (Py_ssize_t k = 0; k < r->nkeys; k++) Py_XDECREF(values[k]);
    return result;
}

/* -- the Reader type --------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Record *record;
    Py_ssize_t single;
} Reader;

static int Reader_init(Reader *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"program", "single", NULL};
    PyObject *program;
    Py_ssize_t single = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|n", names, &PyTuple_Type, &program, &single)) return -1;
    Record *record = build_record(program);
    if (record == NULL) return -1;
    if (single < -1 || single >= record->nkeys) {
        free_record(record);
        PyErr_SetString(PyExc_ValueError, "single names a reader field by its index");
        return -1;
    }
    free_record(self->record);
    self->record = record;
    self->single = single;
    return 0;
}

static void Reader_dealloc(Reader *self) {
    free_record(self->record);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* reader(b, i): the record at byte i of the bytes-like b, and where it ends; a single-field reader returns
 * only the field's value. */
static PyObject *Reader_call(Reader *self, PyObject *args, PyObject *kwargs) {
    Py_buffer buffer;
    Py_ssize_t start;
    if (self->record == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Reader was not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*n", &buffer, &start)) return NULL;
    PyObject *result = NULL;
    if (start < 0 || start > buffer.len) {
        malformed("the record starts beyond the message", start);
        goto done;
    }
    Cursor c = {(const uint8_t *)buffer.buf, buffer.len, start};
    PyObject *value = read_record(&c, self->record, self->single);
    if (value == NULL || self->single >= 0) {
        result = value;
        goto done;
    }
    result = Py_BuildValue("(Nn)", value, c.i);
done:
    PyBuffer_Release(&buffer);
    return result;
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "schemas._native.Reader",
    .tp_doc = PyDoc_STR("Reader(program, single=-1): reads Avro record bodies as a compiled program says."),
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_call = (ternaryfunc)Reader_call,
};

/* -- value checks ------------------------------------------------------------------------------------------
 *
 * Check(rules) tests a datum against `schemas.validation`'s rules, one (field, kind, low, low allowed, high,
 * high allowed) per field: NOT_EMPTY (the value is truthy), BOUNDS (null, or within the bounds; None is no
 * bound) and EVENT_TIME (null, or above `low` and at most the latest event time the call allows). A field the
 * datum lacks fails: `validation.find_problem` then says what is wrong.
 */

enum { CHECK_NOT_EMPTY = 1, CHECK_EVENT_TIME = 2, CHECK_BOUNDS = 3 };

typedef struct {
    PyObject *key, *low, *high; /* owned */
    int kind, low_allowed, high_allowed;
} Rule;

typedef struct {
    PyObject_HEAD
    Rule *rules;
    Py_ssize_t nrules;
} Check;

static int within(PyObject *value, PyObject *low, int low_allowed, PyObject *high, int high_allowed) {
    int ok = 1;
    if (low != Py_None) ok = PyObject_RichCompareBool(value, low, low_allowed ? Py_GE : Py_GT);
    if (ok == 1 && high != Py_None) ok = PyObject_RichCompareBool(value, high, high_allowed ? Py_LE : Py_LT);
    return ok;
}

/* 1 when the datum passes, 0 when it does not, -1 on error. */
static int check_datum(Check *self, PyObject *datum, long long latest_ms) {
    if (!PyDict_Check(datum)) return 0;
    for (Py_ssize_t k = 0; k < self->nrules; k++) {
        Rule *rule = &self->rules[k];
        PyObject *value = PyDict_GetItemWithError(datum, rule->key);
        if (value == NULL) return PyErr_Occurred() ? -1 : 0;
        int ok;
        if (rule->kind == CHECK_NOT_EMPTY) {
            ok = PyObject_IsTrue(value);
        } else if (value == Py_None) {
            ok = 1;
        } else if (rule->kind == CHECK_BOUNDS) {
            ok = within(value, rule->low, rule->low_allowed, rule->high, rule->high_allowed);
        } else {
            PyObject *latest = PyLong_FromLongLong(latest_ms);
            if (latest == NULL) return -1;
            ok = within(value, rule->low, rule->low_allowed, latest, 1);
            Py_DECREF(latest);
        }
        if (ok != 1) return ok;
    }
    return 1;
}

static void Check_dealloc(Check *self) {
    for (Py_ssize_t k = 0; self->rules && k < self->nrules; k++) {
        Py_XDECREF(self->rules[k].key);
        Py_XDECREF(self->rules[k].low);
        Py_XDECREF(self->rules[k].high);
    }
    PyMem_Free(self->rules);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Check_init(Check *self, PyObject *args, PyObject *kwargs) {
    PyObject *rules;
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &rules)) return -1;
    if (self->rules != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Check is initialised once");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(rules);
    self->rules = PyMem_Calloc(n ? n : 1, sizeof(Rule));
    if (self->rules == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->nrules = n;
    for (Py_ssize_t k = 0; k < n; k++) {
        Rule *rule = &self->rules[k];
        PyObject *key, *low, *high;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(rules, k), "O!iOpOp;a rule is (field, kind, low, low allowed, high, "
                              "high allowed)", &PyUnicode_Type, &key, &rule->kind, &low, &rule->low_allowed, &high,
                              &rule->high_allowed))
            return -1;
        if (rule->kind < CHECK_NOT_EMPTY || rule->kind > CHECK_BOUNDS) {
            PyErr_Format(PyExc_ValueError, "rule %zd: no check kind %d", k, rule->kind);
            return -1;
        }
        rule->key = Py_NewRef(key);
        PyUnicode_InternInPlace(&rule->key);
        rule->low = Py_NewRef(low);
        rule->high = Py_NewRef(high);
    }
    return 0;
}

/* check(datum, latest_event_time_ms) -> bool */
static PyObject *Check_call(Check *self, PyObject *args, PyObject *kwargs) {
    PyObject *datum;
    long long latest_ms;
    if (!PyArg_ParseTuple(args, "OL", &datum, &latest_ms)) return NULL;
    int ok = check_datum(self, datum, latest_ms);
    if (ok < 0) return NULL;
    return PyBool_FromLong(ok);
}

static PyTypeObject CheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "schemas._native.Check",
    .tp_doc = PyDoc_STR("Check(rules): check(datum, latest_event_time_ms) is True when the datum keeps the rules."),
    .tp_basicsize = sizeof(Check),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Check_init,
    .tp_dealloc = (destructor)Check_dealloc,
    .tp_call = (ternaryfunc)Check_call,
};

/* -- the decoder's short path ------------------------------------------------------------------------------ */

#define HEADER_SIZE 10 /* 0xC3 0x01, then the writer schema's 8-byte fingerprint */

/* decode_known(records, start, known, skew_ms, latest_ms, event_type, events): see the docstring below. */
static PyObject *decode_known(PyObject *self, PyObject *args) {
    PyObject *records, *known, *event_type, *events;
    Py_ssize_t start;
    long long skew_ms, latest_ms;
    if (!PyArg_ParseTuple(args, "O!nO!LLO!O!", &PyList_Type, &records, &start, &PyDict_Type, &known, &skew_ms,
                          &latest_ms, &PyType_Type, &event_type, &PyList_Type, &events))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "event_type is a tuple type");
        return NULL;
    }
    char last_fp[8];
    PyObject *entry = NULL; /* borrowed from `known`: (name, reader, passes) for last_fp */
    Py_ssize_t n = PyList_GET_SIZE(records), i;
    for (i = start < 0 ? 0 : start; i < n; i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != 4) break;
        PyObject *raw = PyTuple_GET_ITEM(record, 3), *stamp = PyTuple_GET_ITEM(record, 1);
        if (!PyBytes_Check(raw) || !PyLong_Check(stamp)) break;
        const char *b = PyBytes_AS_STRING(raw);
        Py_ssize_t size = PyBytes_GET_SIZE(raw);
        if (size < HEADER_SIZE || b[0] != (char)0xC3 || b[1] != 0x01) break;
        long long timestamp_ms = PyLong_AsLongLong(stamp);
        if (timestamp_ms <= 0 || timestamp_ms > latest_ms) {
            PyErr_Clear();
            break;
        }
        if (entry == NULL || memcmp(last_fp, b + 2, 8) != 0) {
            PyObject *fp = PyBytes_FromStringAndSize(b + 2, 8);
            if (fp == NULL) return NULL;
            entry = PyDict_GetItemWithError(known, fp);
            Py_DECREF(fp);
            if (entry == NULL) {
                if (PyErr_Occurred()) return NULL;
                break;
            }
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3 ||
                !PyObject_TypeCheck(PyTuple_GET_ITEM(entry, 1), &ReaderType) ||
                ((Reader *)PyTuple_GET_ITEM(entry, 1))->single >= 0 ||
                !PyObject_TypeCheck(PyTuple_GET_ITEM(entry, 2), &CheckType)) {
                PyErr_SetString(PyExc_TypeError, "known maps a fingerprint to (name, Reader, Check)");
                return NULL;
            }
            memcpy(last_fp, b + 2, 8);
        }
        Reader *reader = (Reader *)PyTuple_GET_ITEM(entry, 1);
        Cursor c = {(const uint8_t *)b, size, HEADER_SIZE};
        PyObject *datum = read_record(&c, reader->record, -1);
        if (datum == NULL) {
            PyErr_Clear(); /* the caller's decode says what is wrong */
            break;
        }
        if (c.i != size) {
            Py_DECREF(datum);
            break;
        }
        int passes = check_datum((Check *)PyTuple_GET_ITEM(entry, 2), datum, timestamp_ms + skew_ms);
        if (passes != 1) {
            Py_DECREF(datum);
            if (passes < 0) return NULL;
            break;
        }
        PyTypeObject *type = (PyTypeObject *)event_type;
        PyObject *event = type == &PyTuple_Type ? PyTuple_New(3) : type->tp_alloc(type, 3);
        if (event == NULL) {
            Py_DECREF(datum);
            return NULL;
        }
        PyObject *name = PyTuple_GET_ITEM(entry, 0);
        PyTuple_SET_ITEM(event, 0, Py_NewRef(name));
        PyTuple_SET_ITEM(event, 1, datum);
        PyTuple_SET_ITEM(event, 2, Py_NewRef(stamp));
        int appended = PyList_Append(events, event);
        Py_DECREF(event);
        if (appended < 0) return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* peek_known(messages, start, readers, values): see the docstring below. */
static PyObject *peek_known(PyObject *self, PyObject *args) {
    PyObject *messages, *readers, *values;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nO!O!", &PyList_Type, &messages, &start, &PyDict_Type, &readers, &PyList_Type,
                          &values))
        return NULL;
    char last_fp[8];
    PyObject *reader = NULL; /* borrowed from `readers`, for last_fp; Py_None for a schema without the field */
    Py_ssize_t n = PyList_GET_SIZE(messages), i;
    for (i = start < 0 ? 0 : start; i < n; i++) {
        PyObject *raw = PyList_GET_ITEM(messages, i), *value = Py_None;
        if (PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) >= HEADER_SIZE && PyBytes_AS_STRING(raw)[0] == (char)0xC3 &&
            PyBytes_AS_STRING(raw)[1] == 0x01) {
            const char *b = PyBytes_AS_STRING(raw);
            if (reader == NULL || memcmp(last_fp, b + 2, 8) != 0) {
                PyObject *fp = PyBytes_FromStringAndSize(b + 2, 8);
                if (fp == NULL) return NULL;
                reader = PyDict_GetItemWithError(readers, fp);
                Py_DECREF(fp);
                if (reader == NULL) {
                    if (PyErr_Occurred()) return NULL;
                    break; /* a schema not met before: the caller finds its reader */
                }
                if (reader != Py_None && (!PyObject_TypeCheck(reader, &ReaderType) || ((Reader *)reader)->single < 0)) {
                    PyErr_SetString(PyExc_TypeError, "readers maps a fingerprint to a single-field Reader or None");
                    return NULL;
                }
                memcpy(last_fp, b + 2, 8);
            }
            if (reader != Py_None) {
                Cursor c = {(const uint8_t *)b, PyBytes_GET_SIZE(raw), HEADER_SIZE};
                Reader *r = (Reader *)reader;
                value = read_record(&c, r->record, r->single);
                if (value == NULL) {
                    PyErr_Clear(); /* a body broken before the field: None, and decoding will say why */
                    value = Py_None;
                } else {
                    int appended = PyList_Append(values, value);
                    Py_DECREF(value);
                    if (appended < 0) return NULL;
                    continue;
                }
            }
        }
        if (PyList_Append(values, value) < 0) return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"peek_known", peek_known, METH_VARARGS,
     PyDoc_STR("peek_known(messages, start, readers, values): from messages[start] on, appends to `values` what "
               "the single-field Reader of each message's fingerprint (`readers`: fingerprint -> Reader, or None "
               "for a schema without the field) reads, or None for a message that cannot say. Returns the index "
               "of the first message whose fingerprint `readers` lacks, or len(messages).")},
    {"decode_known", decode_known, METH_VARARGS,
     PyDoc_STR("decode_known(records, start, known, skew_ms, latest_ms, event_type, events): the decoder's short "
               "path. From records[start] on, each (offset, timestamp_ms, key, value) record whose value is a "
               "single-object message of a fingerprint in `known` (fingerprint -> (name, Reader, Check)), reads to "
               "its end, has a timestamp above zero and at most latest_ms and passes its check(datum, timestamp_ms + skew_ms) is appended to `events` as "
               "event_type((name, datum, timestamp_ms)). Returns the index of the first record it did not take: "
               "the caller decodes that one the long way, and goes on after it.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "schemas._native", "Avro record bodies to dicts by compiled programs.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&CheckType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    MalformedBody = PyErr_NewExceptionWithDoc("schemas._native.MalformedBody",
                                              "The bytes are not a record of the writer schema.",
                                              PyExc_ValueError, NULL);
    if (MalformedBody == NULL || PyModule_AddObjectRef(m, "MalformedBody", MalformedBody) < 0 ||
        PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObjectRef(m, "Check", (PyObject *)&CheckType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#define CONSTANT(name) if (PyModule_AddIntConstant(m, #name, name) < 0) { Py_DECREF(m); return NULL; }
    CONSTANT(TYPE_BOOLEAN) CONSTANT(TYPE_INT) CONSTANT(TYPE_LONG) CONSTANT(TYPE_FLOAT) CONSTANT(TYPE_DOUBLE)
    CONSTANT(TYPE_BYTES) CONSTANT(TYPE_STRING) CONSTANT(TYPE_RECORD)
    CONSTANT(OPTIONAL_NULL_FIRST) CONSTANT(OPTIONAL_NULL_SECOND)
    CONSTANT(CHECK_NOT_EMPTY) CONSTANT(CHECK_EVENT_TIME) CONSTANT(CHECK_BOUNDS)
    return m;
}
