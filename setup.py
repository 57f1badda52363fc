from setuptools import Extension, setup

# Region decoding of JPEGs (lorat_scale/data/_jpeg_region.c, why it is C: see its header). Optional: where no C
# compiler is found the package installs without it, and data.region_decode falls back to the full decode (the
# same pixels, only slower). It links nothing and needs no libjpeg headers (decode.py hands it libjpeg-turbo).
setup(ext_modules=[Extension("lorat_scale.data._jpeg_region", ["lorat_scale/data/_jpeg_region.c"], optional=True)])
