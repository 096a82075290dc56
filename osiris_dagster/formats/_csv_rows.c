/*
 * CSV lines of a batch of Arrow utf8 columns: RFC 4180 quoting of text that is already the cells'.
 *
 * Why this exists (issue 10, README "Performance"): every staged cell is already the source
 * database's text, so writing CSV is only quoting and joining. Done with pyarrow.compute kernels
 * (a regex scan per column, substring replace, an element-wise join of the row) it cost ~0.45
 * CPU-s per 1M rows of the benchmark table, a third of what the whole `mysql` C client spends.
 * Here it is two passes over the bytes with the GIL released: the first finds the fields that
 * need quotes (16 bytes per step where SSE2 is there) and sizes the output exactly, the second
 * copies. The rules are formats/csv_values.py's, which keeps the pyarrow version as the
 * reference (tests compare the two, and both with Python's csv module):
 *
 *   NULL -> empty field; any other value -> its text;
 *   minimal: a field holding the delimiter, '"', CR or LF is quoted; all: every non-NULL field;
 *   a quoted field's quotes are doubled. A column whose text cannot hold the delimiter (nor
 *   '"', CR, LF: numbers, dates) is not scanned (the caller says which, per column).
 *
 * Every offset is checked against its buffer before it is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef struct {
    Py_buffer validity, offsets, values;
    int has_validity, scan;
    Py_ssize_t offset;     /* the array's offset into its buffers */
    unsigned char *quoted; /* per row, from the first pass: 1 = write this field quoted */
} Column;

typedef struct {
    unsigned char delimiter;
    const char *terminator;
    Py_ssize_t terminator_length;
    int quote_all;
    unsigned char special[256]; /* the delimiter, '"', CR, LF */
} Dialect;

static inline int is_valid(const Column *c, Py_ssize_t row) {
    if (!c->has_validity)
        return 1;
    Py_ssize_t bit = c->offset + row;
    return (((const unsigned char *)c->validity.buf)[bit >> 3] >> (bit & 7)) & 1;
}

static inline const unsigned char *field(const Column *c, Py_ssize_t row, size_t *length) {
    const int32_t *offsets = (const int32_t *)c->offsets.buf + c->offset;
    int32_t start = offsets[row], end = offsets[row + 1];
    if (start < 0 || end < start || end > c->values.len)
        return NULL;
    *length = (size_t)(end - start);
    return (const unsigned char *)c->values.buf + start;
}

static inline int needs_quotes(const unsigned char *p, size_t n, const Dialect *d) {
    size_t i = 0;
#ifdef __SSE2__
    const __m128i delimiter = _mm_set1_epi8((char)d->delimiter), quote = _mm_set1_epi8('"');
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, delimiter), _mm_cmpeq_epi8(x, quote)),
                                   _mm_or_si128(_mm_cmpeq_epi8(x, cr), _mm_cmpeq_epi8(x, lf)));
        if (_mm_movemask_epi8(hit))
            return 1;
    }
#endif
    for (; i < n; i++)
        if (d->special[p[i]])
            return 1;
    return 0;
}

static size_t count_quotes(const unsigned char *p, size_t n) {
    size_t count = 0;
    const unsigned char *end = p + n;
    while ((p = memchr(p, '"', (size_t)(end - p))) != NULL) {
        count++;
        p++;
    }
    return count;
}

/* First pass: which fields are quoted, and the exact size of the lines. 0, or -1: bad offsets. */
static int size_lines(Column *columns, Py_ssize_t ncolumns, Py_ssize_t rows, const Dialect *d, size_t *size) {
    size_t total = (size_t)rows * ((size_t)(ncolumns - 1) + (size_t)d->terminator_length);
    for (Py_ssize_t c = 0; c < ncolumns; c++) {
        Column *column = &columns[c];
        for (Py_ssize_t row = 0; row < rows; row++) {
            column->quoted[row] = 0;
            if (!is_valid(column, row))
                continue;
            size_t length;
            const unsigned char *text = field(column, row, &length);
            if (text == NULL)
                return -1;
            total += length;
            if (d->quote_all || (column->scan && needs_quotes(text, length, d))) {
                column->quoted[row] = 1;
                total += 2 + count_quotes(text, length);
            }
        }
    }
    *size = total;
    return 0;
}

/* Second pass: the lines into `out`, which holds exactly what the first pass counted. */
static size_t write_lines(Column *columns, Py_ssize_t ncolumns, Py_ssize_t rows, const Dialect *d, char *out) {
    char *at = out;
    for (Py_ssize_t row = 0; row < rows; row++) {
        for (Py_ssize_t c = 0; c < ncolumns; c++) {
            Column *column = &columns[c];
            if (c > 0)
                *at++ = (char)d->delimiter;
            if (!is_valid(column, row))
                continue;
            size_t length;
            const unsigned char *text = field(column, row, &length);
            if (!column->quoted[row]) {
                memcpy(at, text, length);
                at += length;
                continue;
            }
            *at++ = '"';
            const unsigned char *end = text + length, *quote;
            while ((quote = memchr(text, '"', (size_t)(end - text))) != NULL) {
                size_t part = (size_t)(quote - text) + 1;
                memcpy(at, text, part);
                at += part;
                *at++ = '"';
                text = quote + 1;
            }
            memcpy(at, text, (size_t)(end - text));
            at += end - text;
            *at++ = '"';
        }
        memcpy(at, d->terminator, (size_t)d->terminator_length);
        at += d->terminator_length;
    }
    return (size_t)(at - out);
}

static void release_columns(Column *columns, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (columns[i].has_validity)
            PyBuffer_Release(&columns[i].validity);
        PyBuffer_Release(&columns[i].offsets);
        PyBuffer_Release(&columns[i].values);
        free(columns[i].quoted);
    }
    free(columns);
}

/* One column's buffers from (validity or None, offsets, values, offset, scan), checked. */
static int take_column(PyObject *item, Py_ssize_t rows, Column *column) {
    PyObject *validity, *offsets, *values;
    Py_ssize_t offset;
    int scan;
    if (!PyArg_ParseTuple(item, "OOOnp", &validity, &offsets, &values, &offset, &scan))
        return -1;
    if (offset < 0 || offset > PY_SSIZE_T_MAX / 2 - rows) {
        PyErr_SetString(PyExc_ValueError, "bad array offset");
        return -1;
    }
    column->offset = offset;
    column->scan = scan;
    if (PyObject_GetBuffer(offsets, &column->offsets, PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(values, &column->values, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&column->offsets);
        return -1;
    }
    if (validity != Py_None) {
        if (PyObject_GetBuffer(validity, &column->validity, PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&column->offsets);
            PyBuffer_Release(&column->values);
            return -1;
        }
        column->has_validity = 1;
    }
    column->quoted = malloc((size_t)rows + 1);
    if (column->quoted == NULL) {
        PyErr_NoMemory();
        return -2; /* buffers held: the caller releases them */
    }
    if (column->offsets.len / (Py_ssize_t)sizeof(int32_t) < offset + rows + 1 ||
        (column->has_validity && column->validity.len < (offset + rows + 7) / 8)) {
        PyErr_SetString(PyExc_ValueError, "an array's buffers are shorter than its rows");
        return -2;
    }
    return 0;
}

static PyObject *format_rows(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *items;
    Py_ssize_t rows;
    int delimiter, quote_all;
    Py_buffer terminator;
    if (!PyArg_ParseTuple(args, "O!niy*p", &PyList_Type, &items, &rows, &delimiter, &terminator, &quote_all))
        return NULL;
    Py_ssize_t ncolumns = PyList_GET_SIZE(items);
    if (ncolumns < 1 || rows < 0 || delimiter < 1 || delimiter > 127 || delimiter == '"' || delimiter == '\r' ||
        delimiter == '\n' || terminator.len < 1 || terminator.len > 2) {
        PyBuffer_Release(&terminator);
        PyErr_SetString(PyExc_ValueError, "need columns, an ASCII delimiter other than '\"', CR, LF and a line end");
        return NULL;
    }
    Dialect dialect = {(unsigned char)delimiter, terminator.buf, terminator.len, quote_all, {0}};
    dialect.special[(unsigned char)delimiter] = dialect.special['"'] = dialect.special['\r'] =
        dialect.special['\n'] = 1;
    Column *columns = calloc((size_t)ncolumns, sizeof(Column));
    if (columns == NULL) {
        PyBuffer_Release(&terminator);
        return PyErr_NoMemory();
    }
    Py_ssize_t taken = 0;
    PyObject *lines = NULL;
    for (; taken < ncolumns; taken++) {
        int status = take_column(PyList_GET_ITEM(items, taken), rows, &columns[taken]);
        if (status == -2)
            taken++;
        if (status < 0)
            goto done;
    }
    size_t size = 0;
    int sized;
    Py_BEGIN_ALLOW_THREADS
    sized = size_lines(columns, ncolumns, rows, &dialect, &size);
    Py_END_ALLOW_THREADS
    if (sized < 0 || size > PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "an array's offsets point outside its values");
        goto done;
    }
    lines = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (lines == NULL)
        goto done;
    size_t written;
    char *out = PyBytes_AS_STRING(lines); /* not shared with anyone until returned */
    Py_BEGIN_ALLOW_THREADS
    written = write_lines(columns, ncolumns, rows, &dialect, out);
    Py_END_ALLOW_THREADS
    if (written != size) {
        Py_CLEAR(lines);
        PyErr_SetString(PyExc_SystemError, "CSV lines differ from their computed size");
    }
done:
    release_columns(columns, taken);
    PyBuffer_Release(&terminator);
    return lines;
}

static PyMethodDef methods[] = {
    {"format_rows", format_rows, METH_VARARGS,
     "format_rows(columns, rows, delimiter, terminator, quote_all) -> bytes\n\n"
     "columns: [(validity or None, offsets, values, offset, scan)] per column, the buffers of Arrow "
     "utf8 arrays of `rows` rows; delimiter: an ASCII code; terminator: b'\\n' or b'\\r\\n'; "
     "scan: whether the column's text can hold the delimiter (else it is never quoted, unless quote_all)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "osiris_dagster.formats._csv_rows",
    .m_doc = "CSV lines of Arrow utf8 columns (see the file's comment).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__csv_rows(void) { return PyModule_Create(&module); }
