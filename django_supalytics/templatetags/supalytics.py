"""``{% supalytics_visitor_header %}``: send the visitor ID to this site's own backend.

In privacy mode there is no cookie; the vendor's script exposes ``window.supalytics.visitorId``.
The rendered script adds it as a header to the page's same-origin ``fetch`` and
``XMLHttpRequest`` calls, so that ``VisitorIdMiddleware`` sees it. Include the vendor's own
script yourself.
"""

from __future__ import annotations

import json

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ..conf import conf

register = template.Library()

_SCRIPT = """<script%s>(function(){
var header=%s;
function vid(url){
  var id=window.supalytics&&window.supalytics.visitorId;
  try{return id&&new URL(url,location.href).origin===location.origin?id:null;}
  catch(e){return null;}
}
var f=window.fetch;
if(f&&!f.__supalytics){
  window.fetch=function(input,init){
    var id=vid(input instanceof Request?input.url:String(input));
    if(id){
      init=Object.assign({},init);
      var h=new Headers(init.headers||(input instanceof Request?input.headers:undefined));
      if(!h.has(header))h.set(header,id);
      init.headers=h;
    }
    return f.call(this,input,init);
  };
  window.fetch.__supalytics=true;
}
var X=window.XMLHttpRequest&&XMLHttpRequest.prototype;
if(X&&!X.__supalytics){
  var open=X.open,send=X.send,set=X.setRequestHeader;
  X.open=function(method,url){this.__supalyticsUrl=String(url);this.__supalyticsSet=false;
    return open.apply(this,arguments);};
  X.setRequestHeader=function(name){
    if(String(name).toLowerCase()===header.toLowerCase())this.__supalyticsSet=true;
    return set.apply(this,arguments);};
  X.send=function(){
    var id=vid(this.__supalyticsUrl||"");
    if(id&&!this.__supalyticsSet)set.call(this,header,id);
    return send.apply(this,arguments);};
  X.__supalytics=true;
}
})();</script>"""


def _nonce(context: template.Context) -> str:
    """The request's CSP nonce, if a CSP middleware set one (Django 6.0's, django-csp's)."""
    request = context.get("request")
    for name in ("csp_nonce", "_csp_nonce"):
        nonce = getattr(request, name, None) if request is not None else None
        if nonce:
            return str(nonce)
    nonce = context.get("csp_nonce")
    return str(nonce) if nonce else ""


@register.simple_tag(takes_context=True)
def supalytics_visitor_header(context: template.Context) -> SafeString:
    """A script that adds ``window.supalytics.visitorId`` as ``HEADER_NAME`` to the page's
    same-origin ``fetch`` and ``XMLHttpRequest`` calls (htmx, axios, jQuery use the latter).
    With a Content-Security-Policy nonce on the request, the script carries it."""
    # supalytics.E012 keeps the name an HTTP token; escaped for a <script> all the same.
    name = json.dumps(conf.HEADER_NAME)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        name = name.replace(char, code)
    nonce = _nonce(context)
    attribute = f' nonce="{escape(nonce)}"' if nonce else ""
    return mark_safe(_SCRIPT % (attribute, name))
