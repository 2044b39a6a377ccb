"""sd-webui-hypernetworks: AUTOMATIC1111-compatible hypernetworks on diffusers."""
