/*
 * MySQL/MariaDB text-protocol result rows -> Arrow string columns (the fast MySQL read path).
 *
 * Why this exists (issue 10, README "Performance"): every cell of the product's CSV is the text the
 * server sends for the value in its text protocol. pymysql reads that text one Python object per
 * cell (~3 s per 1M rows of the benchmark table); connectorx reads the binary protocol, so each
 * value had to be CAST to text by the server and still cost ~0.8 CPU-s per 1M rows, more than half
 * of what the whole `mysql` C client spends. This module only splits the row packets the server
 * already sends into the three buffers of an Arrow `utf8` array per column (validity bitmap,
 * int32 offsets, bytes), with the GIL released while it does.
 *
 * What it does not do: connect, authenticate, TLS, send the query, read the column definitions.
 * pymysql does all of that (sources/mysql_reader.py) and hands over its buffered reader positioned
 * at the first row packet; this reads the rest of the result set from it.
 *
 * Per column, one of three kinds (formats/mysql_text.py decides which):
 *   TEXT   the protocol's bytes as they are (numbers, dates, strings, JSON: the server's text);
 *   HEX    a binary string: "\x" + lowercase hex (a documented exception of the value contract);
 *   BIT    BIT(n): the big-endian bytes as an unsigned decimal integer (the other exception).
 *
 * Every length read from the wire is checked against the packet before it is used; a packet that
 * does not parse is a ProtocolError, never a read outside the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_TEXT = 0, KIND_HEX = 1, KIND_BIT = 2 };

#define MAX_PAYLOAD 0xFFFFFFu /* a packet this long continues in the next one */
#define READ_CHUNK (1u << 20)  /* bytes asked of the reader per call */

static PyObject *ServerError;   /* an ERR packet; args[0] is its payload for pymysql to decode */
static PyObject *ProtocolError; /* bytes that are not a text-protocol result set */

/* ---------------------------------------------------------------------------------------------
 * Block: memory this module filled, handed to pyarrow without a copy (buffer protocol).
 */

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t size;
} Block;

static void Block_dealloc(Block *self) {
    free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Block_getbuffer(Block *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, 1, flags);
}

static PyBufferProcs Block_buffer = {(getbufferproc)Block_getbuffer, NULL};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osiris_dagster.sources._mysql_rows.Block",
    .tp_basicsize = sizeof(Block),
    .tp_dealloc = (destructor)Block_dealloc,
    .tp_as_buffer = &Block_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Read-only bytes owned by this module (an Arrow buffer of one batch).",
};

/* ---------------------------------------------------------------------------------------------
 * Growable byte regions and the column builders made of them.
 */

typedef struct {
    char *data;
    size_t len, cap;
} Region;

static int region_grow(Region *r, size_t extra) {
    size_t cap = r->cap ? r->cap : 4096;
    while (cap - r->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *grown = realloc(r->data, cap);
    if (grown == NULL)
        return -1;
    r->data = grown;
    r->cap = cap;
    return 0;
}

/* Room for `extra` more bytes; the check is inline, the rare growth is not (a call per cell). */
static inline int region_reserve(Region *r, size_t extra) {
    return extra <= r->cap - r->len ? 0 : region_grow(r, extra);
}

/* The region's bytes as a Block; the region starts empty again. */
static PyObject *region_take(Region *r) {
    Block *block = PyObject_New(Block, &BlockType);
    if (block == NULL)
        return NULL;
    block->data = r->data ? r->data : malloc(1);
    block->size = (Py_ssize_t)r->len;
    r->data = NULL;
    r->len = r->cap = 0;
    if (block->data == NULL) {
        Py_DECREF(block);
        return PyErr_NoMemory();
    }
    return (PyObject *)block;
}

typedef struct {
    Region offsets;  /* int32, rows + 1 */
    Region values;   /* the cells' bytes, back to back */
    Region validity; /* one bit per row, 1 = not NULL */
    int64_t nulls;
    size_t values_hint; /* the last batch's text bytes: reserved up front for the next one */
    int kind;
} Column;

/* Why a batch could not take a row: set while the GIL is released, raised after. */
typedef enum { OK = 0, E_MEMORY, E_TOO_LARGE, E_PROTOCOL } Failure;

static Failure column_start(Column *c, Py_ssize_t rows) {
    size_t offsets = ((size_t)rows + 1) * sizeof(int32_t), bits = ((size_t)rows + 7) / 8;
    if (region_reserve(&c->offsets, offsets) || region_reserve(&c->validity, bits) ||
        region_reserve(&c->values, c->values_hint))
        return E_MEMORY;
    memset(c->validity.data, 0, bits);
    *(int32_t *)c->offsets.data = 0;
    c->offsets.len = sizeof(int32_t);
    c->nulls = 0;
    return OK;
}

static const char HEX_DIGITS[] = "0123456789abcdef";

/* Append one cell (value == NULL: SQL NULL) at row `row` of the batch. */
static inline Failure column_append(Column *c, Py_ssize_t row, const unsigned char *value, size_t n) {
    Region *v = &c->values;
    if (value != NULL) {
        c->validity.data[row >> 3] |= (char)(1u << (row & 7));
        if (c->kind == KIND_TEXT) {
            if (region_reserve(v, n))
                return E_MEMORY;
            memcpy(v->data + v->len, value, n);
            v->len += n;
        } else if (c->kind == KIND_HEX) {
            if (n > (SIZE_MAX - 2) / 2 || region_reserve(v, 2 + 2 * n))
                return E_MEMORY;
            char *out = v->data + v->len;
            *out++ = '\\';
            *out++ = 'x';
            for (size_t i = 0; i < n; i++) {
                *out++ = HEX_DIGITS[value[i] >> 4];
                *out++ = HEX_DIGITS[value[i] & 15];
            }
            v->len += 2 + 2 * n;
        } else { /* KIND_BIT: BIT(n) holds at most 64 bits */
            if (n > 8)
                return E_PROTOCOL;
            uint64_t number = 0;
            for (size_t i = 0; i < n; i++)
                number = (number << 8) | value[i];
            char digits[20];
            int count = 0;
            do {
                digits[count++] = (char)('0' + number % 10);
                number /= 10;
            } while (number);
            if (region_reserve(v, (size_t)count))
                return E_MEMORY;
            for (int i = count - 1; i >= 0; i--)
                v->data[v->len++] = digits[i];
        }
    } else {
        c->nulls++;
    }
    if (v->len > INT32_MAX)
        return E_TOO_LARGE; /* more text in one batch's column than an Arrow utf8 array holds */
    /* column_start reserved batch_rows + 1 offsets, and a batch never holds more rows */
    int32_t end = (int32_t)v->len;
    memcpy(c->offsets.data + c->offsets.len, &end, sizeof end);
    c->offsets.len += sizeof end;
    return OK;
}

/* ---------------------------------------------------------------------------------------------
 * RowReader: the rest of one result set, batch by batch.
 */

typedef struct {
    PyObject_HEAD
    PyObject *readinto;  /* the socket's readinto (blocks until at least one byte, or EOF) */
    Column *columns;
    Py_ssize_t ncolumns;
    Py_ssize_t batch_rows;
    size_t batch_bytes;
    unsigned char *input; /* bytes read and not yet parsed: input[start:end] */
    size_t start, end, cap;
    unsigned char *joined; /* a row longer than one packet, its payloads joined */
    size_t joined_cap;
    unsigned int sequence; /* the next packet's sequence number, as pymysql expects it */
    int finished;          /* the end-of-rows packet was read */
    int failed;            /* a call raised: the rows after it are lost, so no call may return more */
    Py_ssize_t rows;   /* rows in the batch being built */
    size_t bytes;      /* payload bytes in it */
    Py_ssize_t failed_column;
} RowReader;

static void RowReader_clear_columns(RowReader *self) {
    if (self->columns == NULL)
        return;
    for (Py_ssize_t i = 0; i < self->ncolumns; i++) {
        free(self->columns[i].offsets.data);
        free(self->columns[i].values.data);
        free(self->columns[i].validity.data);
    }
    free(self->columns);
    self->columns = NULL;
}

static void RowReader_dealloc(RowReader *self) {
    Py_XDECREF(self->readinto);
    RowReader_clear_columns(self);
    free(self->input);
    free(self->joined);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int RowReader_init(RowReader *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"readinto", "head", "kinds", "sequence", "batch_rows", "batch_bytes", NULL};
    PyObject *readinto;
    Py_buffer head, kinds;
    unsigned int sequence;
    Py_ssize_t batch_rows, batch_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy*y*Inn", names, &readinto, &head, &kinds, &sequence,
                                     &batch_rows, &batch_bytes))
        return -1;
    int ok = 0;
    if (self->columns != NULL || self->readinto != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RowReader is initialized once");
    } else if (!PyCallable_Check(readinto)) {
        PyErr_SetString(PyExc_TypeError, "readinto must be callable");
    } else if (kinds.len < 1 || batch_rows < 1 || batch_bytes < 1 || batch_rows > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "need at least one column and positive batch limits");
    } else if ((self->columns = calloc((size_t)kinds.len, sizeof(Column))) == NULL) {
        PyErr_NoMemory();
    } else {
        self->ncolumns = kinds.len;
        ok = 1;
        for (Py_ssize_t i = 0; ok && i < kinds.len; i++) {
            int kind = ((unsigned char *)kinds.buf)[i];
            self->columns[i].kind = kind;
            if (kind != KIND_TEXT && kind != KIND_HEX && kind != KIND_BIT) {
                PyErr_Format(PyExc_ValueError, "unknown column kind %d", kind);
                ok = 0;
            }
        }
        /* The bytes the caller's buffered reader already holds come first. */
        self->cap = (size_t)head.len > READ_CHUNK ? (size_t)head.len * 2 : READ_CHUNK;
        if (ok && (self->input = malloc(self->cap)) == NULL) {
            PyErr_NoMemory();
            ok = 0;
        }
        if (ok) {
            memcpy(self->input, head.buf, (size_t)head.len);
            self->end = (size_t)head.len;
            self->readinto = Py_NewRef(readinto);
            self->sequence = sequence & 0xFF;
            self->batch_rows = batch_rows;
            self->batch_bytes = (size_t)batch_bytes;
        }
    }
    PyBuffer_Release(&head);
    PyBuffer_Release(&kinds);
    return ok ? 0 : -1;
}

static unsigned int packet_length(const unsigned char *header) {
    return header[0] | (header[1] << 8) | ((unsigned int)header[2] << 16);
}

/* Reads at least one more byte into input[end:], making room first. 0, or -1 with an exception. */
static int read_more(RowReader *self) {
    if (self->start > 0) { /* keep only what is not parsed yet */
        memmove(self->input, self->input + self->start, self->end - self->start);
        self->end -= self->start;
        self->start = 0;
    }
    if (self->cap - self->end < READ_CHUNK / 2) {
        size_t cap = self->cap * 2;
        unsigned char *grown = realloc(self->input, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->input = grown;
        self->cap = cap;
    }
    PyObject *view = PyMemoryView_FromMemory((char *)self->input + self->end, (Py_ssize_t)(self->cap - self->end),
                                             PyBUF_WRITE);
    if (view == NULL)
        return -1;
    PyObject *result = PyObject_CallOneArg(self->readinto, view);
    /* The view is released either way (the buffer may move later), but a call made with the
     * read's exception still set would replace it with a SystemError: a reset connection, a
     * timeout or Ctrl-C must reach the caller as themselves. */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *released = PyObject_CallMethod(view, "release", NULL);
    Py_DECREF(view);
    if (result == NULL) {
        if (released == NULL)
            PyErr_Clear();
        Py_XDECREF(released);
        PyErr_Restore(type, value, traceback);
        return -1;
    }
    Py_XDECREF(released);
    if (released == NULL) {
        Py_DECREF(result);
        return -1;
    }
    if (result == Py_None) { /* a non-blocking socket with nothing to read */
        Py_DECREF(result);
        PyErr_SetString(PyExc_BlockingIOError, "the MySQL socket is non-blocking");
        return -1;
    }
    Py_ssize_t count = PyLong_AsSsize_t(result);
    Py_DECREF(result);
    if (count == -1 && PyErr_Occurred())
        return -1;
    if (count <= 0) {
        PyErr_SetString(PyExc_ConnectionError, "the server closed the connection in the middle of the result");
        return -1;
    }
    if ((size_t)count > self->cap - self->end) {
        PyErr_SetString(PyExc_RuntimeError, "the reader returned more bytes than it was given room for");
        return -1;
    }
    self->end += (size_t)count;
    return 0;
}

/* Reads one length-encoded integer of a row packet. Returns 1 for NULL, 0 for a length, -1 if the
 * packet ends first. */
static int read_length(const unsigned char **at, const unsigned char *end, uint64_t *length) {
    const unsigned char *p = *at;
    if (p >= end)
        return -1;
    unsigned char first = *p++;
    int width;
    if (first < 0xFB) {
        *length = first;
        *at = p;
        return 0;
    }
    if (first == 0xFB) {
        *at = p;
        return 1;
    }
    if (first == 0xFC)
        width = 2;
    else if (first == 0xFD)
        width = 3;
    else if (first == 0xFE)
        width = 8;
    else
        return -1;
    if (end - p < width)
        return -1;
    uint64_t value = 0;
    for (int i = width - 1; i >= 0; i--)
        value = (value << 8) | p[i];
    *length = value;
    *at = p + width;
    return 0;
}

static Failure parse_row(RowReader *self, const unsigned char *payload, size_t length) {
    const unsigned char *p = payload, *end = payload + length;
    for (Py_ssize_t i = 0; i < self->ncolumns; i++) {
        uint64_t n = 0;
        int null = read_length(&p, end, &n);
        if (null < 0 || (!null && n > (uint64_t)(end - p))) {
            self->failed_column = i;
            return E_PROTOCOL;
        }
        Failure failure = column_append(&self->columns[i], self->rows, null ? NULL : p, (size_t)n);
        if (failure != OK) {
            self->failed_column = i;
            return failure;
        }
        if (!null)
            p += n;
    }
    if (p != end) {
        self->failed_column = -1;
        return E_PROTOCOL;
    }
    self->rows++;
    self->bytes += length;
    return OK;
}

typedef enum { NEED_INPUT, BATCH_FULL, END_OF_ROWS, SERVER_ERROR, FAILED } Parsed;

/* Parses the complete packets in input[start:end] into the batch (GIL released by the caller). */
static Parsed parse_packets(RowReader *self, Failure *failure, size_t *error_at, size_t *error_length) {
    while (self->rows < self->batch_rows && self->bytes < self->batch_bytes) {
        size_t at = self->start, available = self->end - at;
        if (available < 4)
            return NEED_INPUT;
        size_t length = packet_length(self->input + at);
        const unsigned char *payload = self->input + at + 4;
        size_t consumed = 4 + length;
        unsigned int packets = 1;
        if (available - 4 < length) /* the first packet, whole, before looking past it */
            return NEED_INPUT;
        if (length == MAX_PAYLOAD) { /* a row of 16 MiB or more: its packets' payloads joined */
            size_t total = length, next = at + consumed;
            for (;;) {
                if (self->end - next < 4)
                    return NEED_INPUT;
                size_t part = packet_length(self->input + next);
                if (self->end - next - 4 < part)
                    return NEED_INPUT;
                total += part;
                next += 4 + part;
                packets++;
                if (part < MAX_PAYLOAD)
                    break;
            }
            if (total > self->joined_cap) {
                unsigned char *grown = realloc(self->joined, total);
                if (grown == NULL) {
                    *failure = E_MEMORY;
                    return FAILED;
                }
                self->joined = grown;
                self->joined_cap = total;
            }
            size_t filled = 0;
            unsigned int expected = self->sequence;
            for (size_t piece = at; piece < next; expected++) {
                size_t part = packet_length(self->input + piece);
                if (self->input[piece + 3] != (expected & 0xFF)) {
                    self->failed_column = -2;
                    *failure = E_PROTOCOL;
                    return FAILED;
                }
                memcpy(self->joined + filled, self->input + piece + 4, part);
                filled += part;
                piece += 4 + part;
            }
            payload = self->joined;
            length = total;
            consumed = next - at;
        }
        if (self->input[at + 3] != (self->sequence & 0xFF)) {
            self->failed_column = -2;
            *failure = E_PROTOCOL;
            return FAILED;
        }
        self->sequence = (self->sequence + packets) & 0xFF;
        if (length > 0 && payload[0] == 0xFF) { /* ERR packet: the query failed while sending rows */
            if (packets > 1) { /* an ERR packet is short; a row's first byte is never 0xFF */
                self->failed_column = -1;
                *failure = E_PROTOCOL;
                return FAILED;
            }
            *error_at = (size_t)(payload - self->input);
            *error_length = length;
            return SERVER_ERROR;
        }
        self->start = at + consumed;
        if (length > 0 && length < 9 && payload[0] == 0xFE) { /* EOF packet: the last row was sent */
            self->finished = 1;
            return END_OF_ROWS;
        }
        *failure = parse_row(self, payload, length);
        if (*failure != OK)
            return FAILED;
    }
    return BATCH_FULL;
}

/* The batch built so far as [(rows, null_count, validity | None, offsets, values) per column]. */
static PyObject *take_batch(RowReader *self) {
    PyObject *columns = PyList_New(self->ncolumns);
    if (columns == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->ncolumns; i++) {
        Column *c = &self->columns[i];
        PyObject *validity;
        if (c->nulls) {
            c->validity.len = ((size_t)self->rows + 7) / 8;
            validity = region_take(&c->validity);
        } else {
            validity = Py_NewRef(Py_None);
        }
        c->values_hint = c->values.len + c->values.len / 8;
        PyObject *offsets = validity ? region_take(&c->offsets) : NULL;
        PyObject *values = offsets ? region_take(&c->values) : NULL;
        PyObject *item = values ? Py_BuildValue("(nLNNN)", self->rows, (long long)c->nulls, validity, offsets, values)
                                : NULL;
        if (item == NULL) {
            Py_XDECREF(validity);
            Py_XDECREF(offsets);
            Py_DECREF(columns);
            return NULL;
        }
        PyList_SET_ITEM(columns, i, item);
    }
    self->rows = 0;
    self->bytes = 0;
    return columns;
}

static PyObject *raise_failure(RowReader *self, Failure failure) {
    if (failure == E_MEMORY)
        return PyErr_NoMemory();
    if (failure == E_TOO_LARGE)
        return PyErr_Format(PyExc_ValueError,
                            "column %zd holds more than 2 GiB of text in %zd rows: too large for one batch",
                            self->failed_column, self->rows + 1);
    if (self->failed_column == -2)
        return PyErr_Format(ProtocolError, "packet out of sequence (expected %u)", self->sequence);
    if (self->failed_column >= 0)
        return PyErr_Format(ProtocolError, "row packet ends inside column %zd", self->failed_column);
    return PyErr_Format(ProtocolError, "row packet longer than its %zd columns", self->ncolumns);
}

static PyObject *RowReader_next_batch(RowReader *self, PyObject *Py_UNUSED(ignored)) {
    if (self->columns == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RowReader is not initialized");
        return NULL;
    }
    if (self->failed) {
        PyErr_SetString(ProtocolError, "an earlier read of this result failed: its remaining rows are lost");
        return NULL;
    }
    if (self->finished)
        Py_RETURN_NONE;
    self->rows = 0;
    self->bytes = 0;
    for (Py_ssize_t i = 0; i < self->ncolumns; i++) {
        Failure failure = column_start(&self->columns[i], self->batch_rows);
        if (failure != OK) {
            self->failed = 1;
            return raise_failure(self, failure);
        }
    }
    for (;;) {
        Failure failure = OK;
        size_t error_at = 0, error_length = 0;
        Parsed parsed;
        Py_BEGIN_ALLOW_THREADS
        parsed = parse_packets(self, &failure, &error_at, &error_length);
        Py_END_ALLOW_THREADS
        switch (parsed) {
        case NEED_INPUT:
            if (read_more(self) < 0) {
                self->failed = 1; /* the stream is broken: no batch can follow */
                return NULL;
            }
            continue;
        case SERVER_ERROR: {
            self->failed = 1;
            PyObject *payload = PyBytes_FromStringAndSize((char *)self->input + error_at, (Py_ssize_t)error_length);
            if (payload != NULL) {
                PyErr_SetObject(ServerError, payload);
                Py_DECREF(payload);
            }
            return NULL;
        }
        case FAILED:
            self->failed = 1;
            return raise_failure(self, failure);
        case END_OF_ROWS:
            if (self->rows == 0)
                Py_RETURN_NONE;
            return take_batch(self);
        case BATCH_FULL:
            return take_batch(self);
        }
    }
}

static PyObject *RowReader_finished(RowReader *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->finished);
}

static PyObject *RowReader_sequence(RowReader *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLong(self->sequence);
}

static PyMethodDef RowReader_methods[] = {
    {"next_batch", (PyCFunction)RowReader_next_batch, METH_NOARGS,
     "The next batch as [(rows, null_count, validity or None, offsets, values)] per column, or None "
     "after the last row. Raises ServerError(payload) for an ERR packet, ProtocolError for bytes that "
     "do not parse, ConnectionError if the connection ends early."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef RowReader_getset[] = {
    {"finished", (getter)RowReader_finished, NULL, "The result set's end-of-rows packet was read.", NULL},
    {"sequence", (getter)RowReader_sequence, NULL, "The next packet's sequence number.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RowReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "osiris_dagster.sources._mysql_rows.RowReader",
    .tp_basicsize = sizeof(RowReader),
    .tp_dealloc = (destructor)RowReader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RowReader(readinto, head, kinds, sequence, batch_rows, batch_bytes): the rows of one result set.\n\n"
              "readinto(buffer) reads the connection (a socket's readinto); head is what was read from it "
              "already and not yet parsed; kinds one byte per column (TEXT, HEX, BIT); sequence the next "
              "packet's sequence number.",
    .tp_methods = RowReader_methods,
    .tp_getset = RowReader_getset,
    .tp_init = (initproc)RowReader_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "osiris_dagster.sources._mysql_rows",
    .m_doc = "MySQL text-protocol result rows -> Arrow string buffers (see the file's comment).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__mysql_rows(void) {
    if (PyType_Ready(&BlockType) < 0 || PyType_Ready(&RowReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ServerError = PyErr_NewException("osiris_dagster.sources._mysql_rows.ServerError", NULL, NULL);
    ProtocolError = PyErr_NewException("osiris_dagster.sources._mysql_rows.ProtocolError", NULL, NULL);
    if (ServerError == NULL || ProtocolError == NULL || PyModule_AddObjectRef(m, "ServerError", ServerError) < 0 ||
        PyModule_AddObjectRef(m, "ProtocolError", ProtocolError) < 0 ||
        PyModule_AddObjectRef(m, "RowReader", (PyObject *)&RowReaderType) < 0 ||
        PyModule_AddIntConstant(m, "TEXT", KIND_TEXT) < 0 || PyModule_AddIntConstant(m, "HEX", KIND_HEX) < 0 ||
        PyModule_AddIntConstant(m, "BIT", KIND_BIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
