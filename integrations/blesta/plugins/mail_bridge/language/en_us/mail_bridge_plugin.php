<?php
$lang['MailBridgePlugin.name'] = 'Mail Bridge: client moves';
$lang['MailBridgePlugin.description'] = 'Reports a service moved to another client to the mail bridge, for packages of the Mail Bridge module that ask for it.';
