/* Region (ROI) decoding of JPEGs with libjpeg-turbo's partial decoding (jpeg_crop_scanline, jpeg_skip_scanlines).
 *
 * Why our own C: no maintained, pip-installable Python package exposes libjpeg-turbo's partial decoding
 * (simplejpeg, Pillow, OpenCV, torchvision, imagecodecs: no; PyTurboJPEG needs a system libturbojpeg >= 3.0),
 * and libjpeg reports errors through error_exit, which must not return (it longjmps back to the caller):
 * Python and ctypes cannot do that. The library itself is not linked here and no libjpeg header is needed:
 * lorat_scale/data/decode.py passes the addresses of the libjpeg-turbo functions of a library already on the
 * machine (the one Pillow's wheels bundle), and the library's ABI version and decompressor struct size are
 * asked from the library (jpeg_CreateDecompress names them in its error when they do not match), so the
 * struct is only ever handled as an opaque block whose first field is the error manager pointer.
 *
 * Exactness: decoding the columns [x0 - 1, x1 + 1) (widened to the iMCU grid by libjpeg) and skipping the rows
 * above y0 gives, inside [x0, x1) x [y0, y1), the very bytes of the full decode (the one extra column on each
 * side gives the fancy upsampler its real neighbours); decode.py checks that on a test image when it loads.
 * Decoding stops after row y1 - 1: rows below the region are not entropy-decoded at all (a region down to the
 * last row reads on to the end marker, as the full decode does).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned int jdim;  /* JDIMENSION */

/* struct jpeg_error_mgr: its layout is part of the libjpeg API and unchanged since IJG libjpeg 6b. */
typedef struct {
    void (*error_exit)(void *cinfo);
    void (*emit_message)(void *cinfo, int msg_level);
    void (*output_message)(void *cinfo);
    void (*format_message)(void *cinfo, char *buffer);
    void (*reset_error_mgr)(void *cinfo);
    int msg_code;
    union { int i[8]; char s[80]; } msg_parm;
    int trace_level;
    long num_warnings;
    const char *const *jpeg_message_table;
    int last_jpeg_message;
    const char *const *addon_message_table;
    int first_addon_message;
    int last_addon_message;
} jerr_mgr;

typedef struct {  /* our error manager: libjpeg's fields first, so a jerr_mgr* is also an err_ctx* */
    jerr_mgr pub;
    jmp_buf jump;
    char msg[200];  /* JMSG_LENGTH_MAX */
} err_ctx;

/* The libjpeg-turbo functions, from decode.py (init). */
static struct {
    jerr_mgr *(*std_error)(jerr_mgr *);
    void (*create_decompress)(void *, int, size_t);
    void (*destroy_decompress)(void *);
    void (*mem_src)(void *, const unsigned char *, unsigned long);
    int (*read_header)(void *, int);
    int (*start_decompress)(void *);
    void (*crop_scanline)(void *, jdim *, jdim *);
    jdim (*skip_scanlines)(void *, jdim);
    jdim (*read_scanlines)(void *, unsigned char **, jdim);
    int (*finish_decompress)(void *);
} lib;
static int lib_version = 0;      /* JPEG_LIB_VERSION of the library (62, 70 or 80) */
static size_t struct_size = 0;   /* sizeof(struct jpeg_decompress_struct) in the library */
#define PROBE_SIZE 8192          /* larger than any libjpeg decompressor struct (about 650 bytes) */

static void on_error(void *cinfo) {
    err_ctx *e = *(err_ctx **)cinfo;  /* cinfo->err is the struct's first field */
    e->pub.format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void on_message(void *cinfo, int level) {
    if (level < 0) on_error(cinfo);  /* a warning means corrupt data: strict, like decode_image */
}

static void *new_cinfo(size_t size, err_ctx *e) {
    void *cinfo = calloc(1, size);
    if (!cinfo) return NULL;
    lib.std_error(&e->pub);
    e->pub.error_exit = on_error;
    e->pub.emit_message = on_message;
    e->msg[0] = 0;
    *(err_ctx **)cinfo = e;
    return cinfo;
}

/* One jpeg_CreateDecompress(version, size 0) call: the number its error names (0 if it did not fail). */
static int probe(int version) {
    err_ctx e;
    void *cinfo = new_cinfo(PROBE_SIZE, &e);
    volatile int found = 0;
    if (!cinfo) return 0;
    if (setjmp(e.jump))
        found = e.pub.msg_parm.i[0];
    else
        lib.create_decompress(cinfo, version, 0);
    free(cinfo);  /* never created: nothing to destroy */
    return found;
}

/* init(addresses): the ten function addresses; returns (lib_version, struct_size) as the library states them. */
static PyObject *init(PyObject *self, PyObject *args) {
    unsigned long long a[10];
    if (!PyArg_ParseTuple(args, "(KKKKKKKKKK)", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &a[8],
                          &a[9]))
        return NULL;
    for (int k = 0; k < 10; k++)
        if (!a[k]) { PyErr_SetString(PyExc_ValueError, "null function address"); return NULL; }
    lib.std_error = (void *)(uintptr_t)a[0];
    lib.create_decompress = (void *)(uintptr_t)a[1];
    lib.destroy_decompress = (void *)(uintptr_t)a[2];
    lib.mem_src = (void *)(uintptr_t)a[3];
    lib.read_header = (void *)(uintptr_t)a[4];
    lib.start_decompress = (void *)(uintptr_t)a[5];
    lib.crop_scanline = (void *)(uintptr_t)a[6];
    lib.skip_scanlines = (void *)(uintptr_t)a[7];
    lib.read_scanlines = (void *)(uintptr_t)a[8];
    lib.finish_decompress = (void *)(uintptr_t)a[9];
    /* jpeg_CreateDecompress checks the caller's version, then the struct size, and names the library's own
       value in msg_parm.i[0] of its error. Version -1 and size 0 are never right, so each call reports one. */
    int version = probe(-1), size = version > 0 ? probe(version) : 0;
    if (version <= 0 || size <= 0) {
        PyErr_SetString(PyExc_OSError, "libjpeg did not state its version and struct size");
        return NULL;
    }
    if (size > PROBE_SIZE) {
        PyErr_Format(PyExc_OSError, "libjpeg decompressor struct of %d bytes is implausible", size);
        return NULL;
    }
    lib_version = version;
    struct_size = (size_t)size;
    return Py_BuildValue("(in)", lib_version, (Py_ssize_t)struct_size);
}

/* The region decode proper, GIL released. Returns NULL on success, else the error message (in e->msg). */
static const char *decode_rows(const Py_buffer *src, int width, int height, int x0, int y0, int x1, int y1, int ch,
                               unsigned char *out, err_ctx *e) {
    /* One more column each side (the upsampler's neighbours); libjpeg widens further to its iMCU grid. */
    jdim cx = (jdim)(x0 > 0 ? x0 - 1 : 0), cw = (jdim)(x1 < width ? x1 + 1 : width) - cx;
    void *cinfo = new_cinfo(struct_size, e);
    unsigned char *volatile row = NULL;  /* volatile: set after setjmp, freed after a longjmp */
    const char *volatile err = NULL;
    if (!cinfo) return "out of memory";
    if (setjmp(e->jump)) {
        err = e->msg[0] ? e->msg : "libjpeg error";
    } else {
        lib.create_decompress(cinfo, lib_version, struct_size);
        lib.mem_src(cinfo, (const unsigned char *)src->buf, (unsigned long)src->len);
        if (lib.read_header(cinfo, 1) != 1) {  /* JPEG_HEADER_OK */
            err = "no JPEG image in the data";
        } else {
            lib.start_decompress(cinfo);
            if ((int)cw < width) lib.crop_scanline(cinfo, &cx, &cw);
            row = (unsigned char *)malloc((size_t)cw * 4 + 64);  /* 4 bytes a pixel: any output colour space */
            if (!row) {
                err = "out of memory";
            } else if (y0 > 0 && lib.skip_scanlines(cinfo, (jdim)y0) != (jdim)y0) {
                err = "image ends above the region";
            } else {
                size_t off = (size_t)(x0 - (int)cx) * ch, n = (size_t)(x1 - x0) * ch;
                unsigned char *r = row;
                for (int y = 0; y < y1 - y0; y++) {
                    if (lib.read_scanlines(cinfo, &r, 1) != 1) {
                        err = "image ends inside the region";
                        break;
                    }
                    memcpy(out + (size_t)y * n, r + off, n);
                }
                /* A region down to the last row reads on to the end of the image, as the full decode does:
                   corrupt entropy-coded data that libjpeg only notices at the end marker is an error here too. */
                if (!err && y1 == height) lib.finish_decompress(cinfo);
            }
        }
    }
    lib.destroy_decompress(cinfo);  /* frees libjpeg's memory; valid after an error too (mem is NULL if never made) */
    free(row);
    free(cinfo);
    return err;
}

/* decode(data, width, height, x0, y0, x1, y1, channels, out): rows [y0, y1) x columns [x0, x1) of a JPEG whose full
   size is `width` x `height`, written into `out` (a writable C-contiguous buffer of (y1-y0)*(x1-x0)*channels bytes). */
static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer src, dst;
    int width, height, x0, y0, x1, y1, ch;
    if (!struct_size) {
        PyErr_SetString(PyExc_RuntimeError, "init() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*iiiiiiiw*", &src, &width, &height, &x0, &y0, &x1, &y1, &ch, &dst)) return NULL;
    const char *err = NULL;
    err_ctx e;
    if (x0 < 0 || y0 < 0 || x1 <= x0 || y1 <= y0 || x1 > width || y1 > height || (ch != 1 && ch != 3)) {
        PyErr_Format(PyExc_ValueError, "bad region [%d, %d) x [%d, %d) of width %d, %d channels", x0, x1, y0, y1,
                     width, ch);
    } else if (!PyBuffer_IsContiguous(&dst, 'C') || dst.len < (Py_ssize_t)(x1 - x0) * (y1 - y0) * ch) {
        PyErr_SetString(PyExc_ValueError, "output buffer too small or not contiguous");
    } else {
        Py_BEGIN_ALLOW_THREADS
        err = decode_rows(&src, width, height, x0, y0, x1, y1, ch, (unsigned char *)dst.buf, &e);
        Py_END_ALLOW_THREADS
        if (err) PyErr_SetString(PyExc_ValueError, err);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(addresses) -> (lib_version, struct_size): the libjpeg-turbo functions to use."},
    {"decode", decode, METH_VARARGS,
     "decode(data, width, height, x0, y0, x1, y1, channels, out): rows [y0, y1) x columns [x0, x1) of a JPEG into out."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region",
                                    "Region decoding of JPEGs with libjpeg-turbo (see decode.decode_region).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__jpeg_region(void) { return PyModule_Create(&module); }
