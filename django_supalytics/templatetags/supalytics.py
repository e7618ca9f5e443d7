"""``{% supalytics_visitor_header %}``: send the visitor ID to this site's own backend.

In privacy mode there is no cookie; the vendor's script exposes ``window.supalytics.visitorId``.
The rendered script adds it as a header to the page's same-origin ``fetch`` calls, so that
``VisitorIdMiddleware`` sees it. Include the vendor's own script yourself.
"""

from __future__ import annotations

import json

from django import template
from django.utils.safestring import SafeString, mark_safe

from ..conf import conf

register = template.Library()

_SCRIPT = """<script>(function(){
var header=%s, f=window.fetch;
if(!f||f.__supalytics)return;
window.fetch=function(input,init){
  var vid=window.supalytics&&window.supalytics.visitorId;
  var url=new URL(input instanceof Request?input.url:String(input),location.href);
  if(vid&&url.origin===location.origin){
    init=Object.assign({},init);
    var h=new Headers(init.headers||(input instanceof Request?input.headers:undefined));
    if(!h.has(header))h.set(header,vid);
    init.headers=h;
  }
  return f.call(this,input,init);
};
window.fetch.__supalytics=true;
})();</script>"""


@register.simple_tag
def supalytics_visitor_header() -> SafeString:
    # supalytics.E012 keeps the name an HTTP token; escaped for a <script> all the same.
    name = json.dumps(conf.HEADER_NAME)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        name = name.replace(char, escape)
    return mark_safe(_SCRIPT % name)
