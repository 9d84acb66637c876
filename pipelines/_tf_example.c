/* Labeled examples to tf.Example protobuf bytes and TFRecord frames, in C: the join's work on every example it
 * writes.
 *
 * A Serializer runs a program that `pipelines.examples` builds from the LabeledExample schema: one entry per
 * feature, in name order, as (kind, key, source), where `key` is the map entry's key field (tag, length, name)
 * and `source` an index into the Example tuple, or a served feature's name in the tuple's features dict. A
 * value of None is left out, as an absent feature. The bytes are those of `tf_example._serialize_any`; an
 * example whose features dict holds other names than the program's goes to `fallback`, which writes those.
 *
 * Feature kinds: FLOAT (a packed FloatList of one), INT (a packed Int64List of one; below zero, its 64-bit
 * two's complement) and BYTES (a BytesList of one str, UTF-8).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { KIND_FLOAT = 1, KIND_INT = 2, KIND_BYTES = 3 };

typedef struct {
    int kind;
    PyObject *key;    /* bytes: the map entry's key field */
    Py_ssize_t index; /* into the Example tuple, or -1 */
    PyObject *name;   /* the features dict's key when index is -1 */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries;
    Py_ssize_t nentries;
    Py_ssize_t features_index;
    Py_ssize_t width;     /* fields an Example tuple must have: one past the highest index read */
    Py_ssize_t nfeatures; /* names the features dict must hold */
    PyObject *fallback;
} Serializer;

typedef struct {
    char *data;
    Py_ssize_t size, capacity;
    int owned; /* data is PyMem's, not the caller's stack */
} Buffer;

static int reserve(Buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = (b->size + more) * 2;
    char *data = b->owned ? PyMem_Realloc(b->data, capacity) : PyMem_Malloc(capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (!b->owned) memcpy(data, b->data, b->size);
    b->data = data;
    b->capacity = capacity;
    b->owned = 1;
    return 0;
}

static int varint_size(uint64_t n) {
    int size = 1;
    while (n >= 0x80) {
        n >>= 7;
        size++;
    }
    return size;
}

static void put_varint(Buffer *b, uint64_t n) {  /* room reserved by the caller */
    while (n >= 0x80) {
        b->data[b->size++] = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    b->data[b->size++] = (char)n;
}

static void put(Buffer *b, const void *bytes, Py_ssize_t n) {
    memcpy(b->data + b->size, bytes, n);
    b->size += n;
}

/* One map entry: 0x0a, its length, the key field, 0x12, the Feature's length, the Feature. */
static int put_entry(Buffer *b, Entry *e, PyObject *value) {
    char *key;
    Py_ssize_t key_size;
    PyBytes_AsStringAndSize(e->key, &key, &key_size);
    uint8_t head[32];
    Py_ssize_t head_size = 0;
    const char *payload = NULL;
    Py_ssize_t payload_size = 0;
    switch (e->kind) {
    case KIND_FLOAT: {  /* float_list (2) { packed value (1): 4 bytes } */
        double x = PyFloat_AsDouble(value);
        if (x == -1.0 && PyErr_Occurred()) return -1;
        head[0] = 0x12; head[1] = 0x06; head[2] = 0x0a; head[3] = 0x04;
        if (PyFloat_Pack4(x, (char *)head + 4, 1) < 0) return -1;
        head_size = 8;
        break;
    }
    case KIND_INT: {  /* int64_list (3) { packed value (1) } */
        long long n = PyLong_AsLongLong(value);
        if (n == -1 && PyErr_Occurred()) return -1;
        uint64_t u = (uint64_t)n;
        int packed = varint_size(u);
        Buffer h = {(char *)head, 0, sizeof head, 0};
        h.data[h.size++] = 0x1a;
        put_varint(&h, (uint64_t)packed + 2);
        h.data[h.size++] = 0x0a;
        put_varint(&h, (uint64_t)packed);
        put_varint(&h, u);
        head_size = h.size;
        break;
    }
    case KIND_BYTES: {  /* bytes_list (1) { value (1) } */
        payload = PyUnicode_AsUTF8AndSize(value, &payload_size);
        if (payload == NULL) return -1;
        uint64_t inner = 1 + varint_size((uint64_t)payload_size) + (uint64_t)payload_size;
        Buffer h = {(char *)head, 0, sizeof head, 0};
        h.data[h.size++] = 0x0a;
        put_varint(&h, inner);
        h.data[h.size++] = 0x0a;
        put_varint(&h, (uint64_t)payload_size);
        head_size = h.size;
        break;
    }
    }
    uint64_t feature = (uint64_t)(head_size + payload_size);
    uint64_t body = (uint64_t)key_size + 1 + varint_size(feature) + feature;
    if (reserve(b, 1 + 10 + (Py_ssize_t)body) < 0) return -1;
    b->data[b->size++] = 0x0a;
    put_varint(b, body);
    put(b, key, key_size);
    b->data[b->size++] = 0x12;
    put_varint(b, feature);
    put(b, head, head_size);
    if (payload_size) put(b, payload, payload_size);
    return 0;
}

static PyObject *Serializer_call(Serializer *self, PyObject *args, PyObject *kwargs) {
    PyObject *example;
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &example)) return NULL;
    if (PyTuple_GET_SIZE(example) < self->width) {
        PyErr_Format(PyExc_TypeError, "not an Example: %zd fields, not %zd", PyTuple_GET_SIZE(example), self->width);
        return NULL;
    }
    PyObject *features = PyTuple_GET_ITEM(example, self->features_index);
    if (!PyDict_Check(features) || PyDict_GET_SIZE(features) != self->nfeatures)
        return PyObject_CallOneArg(self->fallback, example);
    for (Py_ssize_t k = 0; k < self->nentries; k++) {
        Entry *e = &self->entries[k];
        if (e->index < 0 && PyDict_GetItemWithError(features, e->name) == NULL) {
            if (PyErr_Occurred()) return NULL;
            return PyObject_CallOneArg(self->fallback, example);
        }
    }
    char initial[1024];
    Buffer b = {initial, 0, sizeof initial, 0};
    PyObject *out = NULL;
    for (Py_ssize_t k = 0; k < self->nentries; k++) {
        Entry *e = &self->entries[k];
        PyObject *value = e->index >= 0 ? PyTuple_GET_ITEM(example, e->index) : PyDict_GetItem(features, e->name);
        if (value != Py_None && put_entry(&b, e, value) < 0) goto done;
    }
    uint8_t head[11];
    Buffer h = {(char *)head, 0, sizeof head, 0};
    h.data[h.size++] = 0x0a;  /* Example.features (1) */
    put_varint(&h, (uint64_t)b.size);
    out = PyBytes_FromStringAndSize(NULL, h.size + b.size);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), head, h.size);
        memcpy(PyBytes_AS_STRING(out) + h.size, b.data, b.size);
    }
done:
    if (b.owned) PyMem_Free(b.data);
    return out;
}

/* -- TFRecord frames -----------------------------------------------------------------------------------------
 *
 * A record is framed as its length (uint64, little-endian), the masked CRC-32C of those 8 bytes, the record,
 * and the masked CRC-32C of the record: what TensorFlow's TFRecord reader checks.
 */

static PyObject *crc32c_of; /* the crc32c package's crc32c(data): the project's one CRC-32C, in hardware where the
                            * processor has it */

static int put_masked_crc(char *at, PyObject *data) {
    PyObject *value = PyObject_CallOneArg(crc32c_of, data);
    if (value == NULL) return -1;
    uint32_t crc = (uint32_t)PyLong_AsUnsignedLong(value);
    Py_DECREF(value);
    if (PyErr_Occurred()) return -1;
    uint32_t masked = ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
    for (int k = 0; k < 4; k++) at[k] = (char)(masked >> (8 * k));
    return 0;
}

static PyObject *frame(PyObject *self, PyObject *records) {
    if (!PyList_Check(records)) {
        PyErr_SetString(PyExc_TypeError, "frame takes a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records), total = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *record = PyList_GET_ITEM(records, r);
        if (!PyBytes_Check(record)) {
            PyErr_Format(PyExc_TypeError, "record %zd is %.100s, not bytes", r, Py_TYPE(record)->tp_name);
            return NULL;
        }
        total += 16 + PyBytes_GET_SIZE(record);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *record = PyList_GET_ITEM(records, r);
        uint64_t length = (uint64_t)PyBytes_GET_SIZE(record);
        for (int k = 0; k < 8; k++) at[k] = (char)(length >> (8 * k));
        PyObject *header = PyMemoryView_FromMemory(at, 8, PyBUF_READ);
        if (header == NULL) goto failed;
        int header_failed = put_masked_crc(at + 8, header);
        Py_DECREF(header);
        if (header_failed) goto failed;
        memcpy(at + 12, PyBytes_AS_STRING(record), length);
        if (put_masked_crc(at + 12 + length, record) < 0) goto failed;
        at += 16 + length;
    }
    return out;
failed:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"frame", frame, METH_O,
     PyDoc_STR("frame(records): the TFRecord frames of a list of bytes records, one after another, as bytes.")},
    {NULL, NULL, 0, NULL},
};

static void Serializer_dealloc(Serializer *self) {
    for (Py_ssize_t k = 0; self->entries && k < self->nentries; k++) {
        Py_XDECREF(self->entries[k].key);
        Py_XDECREF(self->entries[k].name);
    }
    PyMem_Free(self->entries);
    Py_XDECREF(self->fallback);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Serializer_init(Serializer *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"program", "features_index", "fallback", NULL};
    PyObject *program, *fallback;
    Py_ssize_t features_index;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nO", names, &PyTuple_Type, &program, &features_index,
                                     &fallback))
        return -1;
    if (self->entries != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Serializer is initialised once");
        return -1;
    }
    if (features_index < 0) {
        PyErr_SetString(PyExc_ValueError, "features_index is the features dict's index in an Example");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(program);
    self->entries = PyMem_Calloc(n ? n : 1, sizeof(Entry));
    if (self->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->nentries = n;
    self->features_index = features_index;
    self->width = features_index + 1;
    self->fallback = Py_NewRef(fallback);
    for (Py_ssize_t k = 0; k < n; k++) {
        Entry *e = &self->entries[k];
        PyObject *key, *source;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(program, k), "iO!O;an entry is (kind, key, source)", &e->kind,
                              &PyBytes_Type, &key, &source))
            return -1;
        if (e->kind < KIND_FLOAT || e->kind > KIND_BYTES) {
            PyErr_Format(PyExc_ValueError, "entry %zd: no feature kind %d", k, e->kind);
            return -1;
        }
        e->key = Py_NewRef(key);
        if (PyUnicode_Check(source)) {
            e->index = -1;
            e->name = Py_NewRef(source);
            self->nfeatures++;
        } else if ((e->index = PyLong_AsSsize_t(source)) < 0 || e->index == features_index) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "entry %zd: no Example field %zd", k, e->index);
            return -1;
        } else if (e->index >= self->width) {
            self->width = e->index + 1;
        }
    }
    return 0;
}

static PyTypeObject SerializerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipelines._tf_example.Serializer",
    .tp_doc = PyDoc_STR("Serializer(program, features_index, fallback): Example tuples to tf.Example bytes."),
    .tp_basicsize = sizeof(Serializer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Serializer_init,
    .tp_dealloc = (destructor)Serializer_dealloc,
    .tp_call = (ternaryfunc)Serializer_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipelines._tf_example", "Labeled examples to tf.Example bytes and TFRecord frames.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__tf_example(void) {
    PyObject *package = PyImport_ImportModule("crc32c");
    if (package == NULL) return NULL;
    crc32c_of = PyObject_GetAttrString(package, "crc32c");
    Py_DECREF(package);
    if (crc32c_of == NULL) return NULL;
    if (PyType_Ready(&SerializerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Serializer", (PyObject *)&SerializerType) < 0 ||
        PyModule_AddIntConstant(m, "KIND_FLOAT", KIND_FLOAT) < 0 ||
        PyModule_AddIntConstant(m, "KIND_INT", KIND_INT) < 0 ||
        PyModule_AddIntConstant(m, "KIND_BYTES", KIND_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
