"""Only what setup.cfg cannot say: the optional C extensions, the proxy's message framer and audit lane, and the
spool's event chain (which links OpenSSL's libcrypto, as Python's hashlib does).

`optional=True`: where one cannot be built (no compiler, Python or OpenSSL headers), installation goes on and
agent.proxy.pgwire and agent.spool use their pure-Python code instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("agent.proxy._framer", ["agent/proxy/_framer.c"], depends=["agent/_be32.h"], optional=True),
    Extension("agent._chain", ["agent/_chain.c"], depends=["agent/_be32.h"], libraries=["crypto"], optional=True),
])
